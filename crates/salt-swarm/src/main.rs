//! `salt-swarm`: N simulated Salt minions in one process.
#![allow(dead_code)]
mod crypt;
fn main() {}
