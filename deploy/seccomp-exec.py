#!/usr/bin/python3
"""Runs a command under a Docker-format seccomp profile, through libseccomp
(Debian: python3-seccomp), the way a container runtime applies it: the
filter is loaded, then the command is exec'd.

    /usr/bin/python3 deploy/seccomp-exec.py deploy/seccomp-io_uring.json CMD ARGS...

Only what coreline's profile uses is supported (a default action with an
errno, plain allow rules by name); anything else is refused.
"""
import errno
import json
import os
import sys

import seccomp


def action(name, errno_ret):
    if name == "SCMP_ACT_ALLOW":
        return seccomp.ALLOW
    if name == "SCMP_ACT_ERRNO":
        return seccomp.ERRNO(errno_ret)
    sys.exit(f"seccomp-exec: unsupported action {name}")


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    profile = json.load(open(sys.argv[1]))
    default = action(profile["defaultAction"], profile.get("defaultErrnoRet", errno.EPERM))
    f = seccomp.SyscallFilter(defaction=default)
    for rule in profile["syscalls"]:
        if rule.get("args") or rule.get("includes") or rule.get("excludes"):
            sys.exit("seccomp-exec: conditional rules are not supported")
        act = action(rule["action"], rule.get("errnoRet", errno.EPERM))
        for name in rule["names"]:
            try:
                f.add_rule(act, name)
            except (RuntimeError, ValueError):
                pass  # not a system call on this architecture (as runc skips it)
    f.load()
    os.execvp(sys.argv[2], sys.argv[2:])


main()
