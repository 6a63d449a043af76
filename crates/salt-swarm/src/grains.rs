//! Grains of the simulated minions: one shared template per OS flavour (the keys and value
//! shapes of a real 3008 minion's `grains.items`, ~3 KB as msgpack) and the few values that
//! differ per minion (`id`, host names, addresses, `machine_id`, ...), filled in when the
//! grains are needed (the start-up `_pillar` request, `grains.items`, grain targeting). No
//! minion stores its grains.
//!
//! Minion `n` (1-based) runs flavour `(n - 1) % 4` of [`FLAVOURS`], so `salt -G os:Debian`
//! targets minions 1, 5, 9, ...

use std::net::Ipv4Addr;

use rmpv::Value as Mp;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// An operating system a simulated minion claims to run.
pub struct Flavour {
    /// `os`.
    pub os: &'static str,
    /// `os_family`.
    pub os_family: &'static str,
    /// `osrelease`.
    pub osrelease: &'static str,
    /// `oscodename`.
    pub oscodename: &'static str,
    /// `osfullname`.
    pub osfullname: &'static str,
    /// `kernelrelease`.
    pub kernelrelease: &'static str,
    /// `init`.
    pub init: &'static str,
    /// `ps`.
    pub ps: &'static str,
}

/// The flavours, in the order minions are given them.
pub const FLAVOURS: [Flavour; 4] = [
    Flavour {
        os: "Debian",
        os_family: "Debian",
        osrelease: "12",
        oscodename: "bookworm",
        osfullname: "Debian GNU/Linux",
        kernelrelease: "6.1.0-26-amd64",
        init: "systemd",
        ps: "ps -efHww",
    },
    Flavour {
        os: "Ubuntu",
        os_family: "Debian",
        osrelease: "24.04",
        oscodename: "noble",
        osfullname: "Ubuntu",
        kernelrelease: "6.8.0-45-generic",
        init: "systemd",
        ps: "ps -efHww",
    },
    Flavour {
        os: "Rocky",
        os_family: "RedHat",
        osrelease: "9.4",
        oscodename: "Blue Onyx",
        osfullname: "Rocky Linux",
        kernelrelease: "5.14.0-427.13.1.el9_4.x86_64",
        init: "systemd",
        ps: "ps -efHww",
    },
    Flavour {
        os: "SUSE",
        os_family: "Suse",
        osrelease: "15.6",
        oscodename: "openSUSE Leap 15.6",
        osfullname: "Leap",
        kernelrelease: "6.4.0-150600.23.22-default",
        init: "systemd",
        ps: "ps -efHww",
    },
];

/// The flavour of minion `index` (1-based).
pub fn flavour(index: u32) -> &'static Flavour {
    &FLAVOURS[(index.saturating_sub(1) as usize) % FLAVOURS.len()]
}

/// Builds the grains of one minion.
pub struct Grains {
    saltversion: String,
    pid: u32,
}

impl Grains {
    /// Grains claiming Salt `saltversion`.
    pub fn new(saltversion: &str) -> Grains {
        Grains {
            saltversion: saltversion.to_owned(),
            pid: std::process::id(),
        }
    }

    /// The grains of minion `index` with id `id` and address `ip`, as msgpack.
    pub fn build(&self, index: u32, id: &str, ip: Ipv4Addr) -> Mp {
        salt_wire::value::json_to_mp(&self.json(index, id, ip))
    }

    /// The same, as JSON.
    pub fn json(&self, index: u32, id: &str, ip: Ipv4Addr) -> Value {
        let f = flavour(index);
        let digest = Sha256::digest(id.as_bytes());
        let machine_id = hex::encode(&digest[..16]);
        let server_id =
            u32::from_be_bytes([digest[16], digest[17], digest[18], digest[19]]) & 0x7fff_ffff;
        let ipstr = ip.to_string();
        let o = ip.octets();
        let mac = format!("52:54:00:{:02x}:{:02x}:{:02x}", o[1], o[2], o[3]);
        let major: Value = f
            .osrelease
            .split('.')
            .next()
            .and_then(|m| m.parse::<u64>().ok())
            .map(Value::from)
            .unwrap_or(Value::Null);
        let release_info: Vec<Value> = f
            .osrelease
            .split('.')
            .map(|p| p.parse::<u64>().map(Value::from).unwrap_or(Value::from(p)))
            .collect();
        let version_info: Vec<Value> = self
            .saltversion
            .split('.')
            .map(|p| p.parse::<u64>().map(Value::from).unwrap_or(Value::from(p)))
            .collect();
        json!({
            "cwd": "/",
            "ip_gw": true,
            "ip4_gw": "127.0.0.1",
            "ip6_gw": false,
            "dns": {
                "nameservers": ["127.0.0.53"],
                "ip4_nameservers": ["127.0.0.53"],
                "ip6_nameservers": [],
                "sortlist": [],
                "domain": "",
                "search": ["swarm.test"],
                "options": []
            },
            "fqdns": [],
            "machine_id": machine_id,
            "master": "127.0.0.1",
            "server_id": server_id,
            "localhost": id,
            "fqdn": format!("{id}.swarm.test"),
            "host": id,
            "domain": "swarm.test",
            "hwaddr_interfaces": {"lo": "00:00:00:00:00:00", "eth0": mac},
            "id": id,
            "ip4_interfaces": {"lo": ["127.0.0.1", ipstr]},
            "ip6_interfaces": {"lo": ["::1"]},
            "ipv4": [ipstr, "127.0.0.1"],
            "ipv6": ["::1"],
            "fqdn_ip4": [ipstr],
            "fqdn_ip6": [],
            "ip_interfaces": {"lo": ["127.0.0.1", ipstr, "::1"]},
            "kernelparams": [["BOOT_IMAGE", "/boot/vmlinuz"], ["root", "/dev/vda1"], ["ro", null], ["quiet", null]],
            "locale_info": {
                "defaultlanguage": "en_US",
                "defaultencoding": "UTF-8",
                "detectedencoding": "utf-8",
                "timezone": "UTC"
            },
            "num_gpus": 0,
            "gpus": [],
            "kernel": "Linux",
            "nodename": id,
            "kernelrelease": f.kernelrelease,
            "kernelversion": "#1 SMP PREEMPT_DYNAMIC",
            "cpuarch": "x86_64",
            "init": f.init,
            "systemd": {"version": "252", "features": "+PAM +AUDIT +SELINUX +APPARMOR +IMA +SMACK +SECCOMP +GCRYPT -GNUTLS +OPENSSL +ACL +BLKID +CURL +ELFUTILS +FIDO2 +IDN2 -IDN +IPTC +KMOD +LIBCRYPTSETUP +LIBFDISK +PCRE2 -PWQUALITY +P11KIT +QRENCODE +TPM2 +BZIP2 +LZ4 +XZ +ZLIB +ZSTD -BPF_FRAMEWORK -XKBCOMMON +UTMP +SYSVINIT default-hierarchy=unified"},
            "os": f.os,
            "os_family": f.os_family,
            "oscodename": f.oscodename,
            "osfullname": f.osfullname,
            "lsb_distrib_id": f.osfullname,
            "lsb_distrib_release": f.osrelease,
            "lsb_distrib_codename": f.oscodename,
            "osrelease": f.osrelease,
            "osrelease_info": release_info,
            "osmajorrelease": major,
            "osfinger": format!("{}-{}", f.osfullname, f.osrelease.split('.').next().unwrap_or("")),
            "num_cpus": 2,
            "cpu_model": "QEMU Virtual CPU version 2.5+",
            "cpu_flags": ["fpu", "vme", "de", "pse", "tsc", "msr", "pae", "mce", "cx8", "apic", "sep", "mtrr", "pge", "mca", "cmov", "pat", "pse36", "clflush", "mmx", "fxsr", "sse", "sse2", "ht", "syscall", "nx", "lm", "constant_tsc", "nopl", "xtopology", "cpuid", "pni", "cx16", "x2apic", "hypervisor", "lahf_lm"],
            "osarch": if f.os_family == "Debian" { "amd64" } else { "x86_64" },
            "mem_total": 3931,
            "swap_total": 1023,
            "virtual": "kvm",
            "ps": f.ps,
            "path": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "systempath": ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"],
            "pythonexecutable": "/opt/saltstack/salt/bin/python3.10",
            "pythonpath": ["/opt/saltstack/salt", "/opt/saltstack/salt/lib/python310.zip", "/opt/saltstack/salt/lib/python3.10", "/opt/saltstack/salt/lib/python3.10/lib-dynload", "/opt/saltstack/salt/lib/python3.10/site-packages"],
            "pythonversion": [3, 10, 15, "final", 0],
            "saltpath": "/opt/saltstack/salt/lib/python3.10/site-packages/salt",
            "saltversion": self.saltversion,
            "saltversioninfo": version_info,
            "zmqversion": "4.3.5",
            "disks": ["vda"],
            "ssds": [],
            "shell": "/bin/bash",
            "transactional": false,
            "efi": false,
            "efi-secure-boot": false,
            "username": "root",
            "groupname": "root",
            "pid": self.pid,
            "gid": 0,
            "uid": 0,
            "zfs_support": false,
            "zfs_feature_flags": false,
            "biosversion": "1.16.3-debian-1.16.3-2",
            "productname": "Standard PC (Q35 + ICH9, 2009)",
            "manufacturer": "QEMU",
            "biosreleasedate": "04/01/2014",
            "uuid": format!("{}-{}-{}-{}-{}", &machine_id[..8], &machine_id[8..12], &machine_id[12..16], &machine_id[16..20], &machine_id[20..32]),
            "serialnumber": "",
            "virtual_subtype": null,
            "selinux": {"enabled": f.os_family == "RedHat", "enforced": if f.os_family == "RedHat" { "Enforcing" } else { "Disabled" }},
            "package": null,
            "ca_truststore": "/etc/ssl/certs/ca-certificates.crt"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grains_are_per_minion_and_a_few_kb() {
        let g = Grains::new("3008.4");
        let a = g.json(1, "swarm-01", Ipv4Addr::new(127, 1, 0, 1));
        let b = g.json(3, "swarm-03", Ipv4Addr::new(127, 1, 0, 3));
        assert_eq!(a["id"], "swarm-01");
        assert_eq!(a["os"], "Debian");
        assert_eq!(b["os"], "Rocky");
        assert_eq!(b["os_family"], "RedHat");
        assert_eq!(a["ipv4"], json!(["127.1.0.1", "127.0.0.1"]));
        assert_ne!(a["machine_id"], b["machine_id"]);
        assert_eq!(a["saltversioninfo"], json!([3008, 4]));
        assert_eq!(b["osmajorrelease"], json!(9));
        let mut bytes = Vec::new();
        let _ = rmpv::encode::write_value(
            &mut bytes,
            &g.build(1, "swarm-01", Ipv4Addr::new(127, 1, 0, 1)),
        );
        assert!(
            (2000..12000).contains(&bytes.len()),
            "{} bytes",
            bytes.len()
        );
    }
}
