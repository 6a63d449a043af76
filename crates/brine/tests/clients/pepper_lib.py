"""Drives a salt-api with the pepper *library* (libpepper.Pepper) and prints one JSON document
with everything it got back. Used by tests/pepper.rs against Brine and the Python reference.

usage: pepper_lib.py URL
"""
import json
import sys

from pepper import Pepper

url = sys.argv[1]
api = Pepper(url)
out = {}
login = api.login("saltdev", "saltdev", "auto")
out["login_keys"] = sorted(login.keys())
out["perms"] = login["perms"]
out["local"] = api.local("*", "test.ping")
out["local_args"] = api.local("m1", "test.arg", arg=["a", "k=v"], kwarg={"x": 1})
out["local_async"] = api.local_async("m1", "test.ping")
out["runner"] = api.runner("test.arg", arg=["r"], kw="v")
out["wheel"] = api.wheel("key.list_all")
out["low_list"] = api.low(
    [
        {"client": "local", "tgt": "m2", "fun": "test.echo", "arg": ["hi"]},
        {"client": "runner", "fun": "jobs.list_job", "jid": "20000101000000000000"},
    ]
)
# Token mode: /token then /run with the token in each chunk (pepper's -r mode).
tok = api.req("/token", {"username": "saltdev", "password": "saltdev", "eauth": "auto"})
out["token_keys"] = sorted(tok[0].keys())
api2 = Pepper(url)
api2.auth = {"token": tok[0]["token"]}
out["run_with_token"] = api2.low(
    [{"client": "local", "tgt": "m1", "fun": "test.ping", "token": tok[0]["token"]}], path="/run"
)
out["logout"] = api.req("/logout", {})
try:
    api.local("*", "test.ping")
    out["after_logout"] = "accepted"
except Exception as exc:  # pepper raises on 401
    out["after_logout"] = type(exc).__name__
print(json.dumps(out, sort_keys=True))
