"""Writes the test vectors of salt-swarm's crypt module with Salt's own code.

Run with the project's Salt venv from this directory:
    /path/to/.venv/bin/python crypticle.py
"""
import base64

import salt.crypt

key = salt.crypt.Crypticle.generate_key_string()
c = salt.crypt.Crypticle({}, key)
with open("crypticle-key.txt", "w") as f:
    f.write(key + "\n")
with open("crypticle-dumps.b64", "w") as f:
    f.write(base64.b64encode(c.dumps({"fun": "test.ping", "arg": []})).decode() + "\n")

# X9.31: a 1024-bit key and the token Salt's RSAX931Signer makes of b"salt" with it.
priv, _pub = salt.crypt.gen_keys(1024)
with open("x931-key.pem", "w") as f:
    f.write(priv)
sig = salt.crypt.PrivateKey.from_str(priv).encrypt(b"salt")
with open("x931-salt-token.b64", "w") as f:
    f.write(base64.b64encode(sig).decode() + "\n")
