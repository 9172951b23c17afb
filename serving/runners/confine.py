"""Confining a runner process: what an uploaded model may do once it runs.

Applied in the runner right after the zygote forked it, before the artifact is read:
- rlimits: address space (MAAS_RUNNER_MEMORY), no file growth (RLIMIT_FSIZE 0), few descriptors,
  no core dumps;
- Landlock (filesystem): read-only access to the interpreter's and libraries' own trees and to the
  modules an operator trusted; nothing else can be opened, no file anywhere can be written,
  created, removed or executed, and /proc of other processes (their environment) is out of reach;
- seccomp (syscalls): no new processes (fork, vfork, clone without CLONE_THREAD, clone3), no exec,
  no sockets of any kind (the runner keeps only the one it was handed), no signals to other
  processes, no ptrace or reading other processes' memory, no namespaces, mounts, BPF, io_uring,
  userfaultfd or keyrings. Denied calls fail with EPERM (ENOSYS for clone3, so libc falls back to
  clone, which the filter can judge), so a model sees an ordinary OSError.

The seccomp filter is a deny-list on top of Landlock, not an allow-list: CPython, numpy, scipy and
scikit-learn use a wide and version-dependent set of syscalls, and every one of the dangerous
families is closed above. Landlock is the layer that keeps files (the registry's SQLite file, the
store, tokens in /proc) out of reach.
"""

from __future__ import annotations

import errno
import os
import resource
import sys
from collections.abc import Iterable

CLONE_THREAD = 0x00010000
MAX_OPEN_FILES = 64

# Syscalls a model never needs; each opens a way out of the runner.
_DENIED_SYSCALLS = (
    "execve",
    "execveat",
    "fork",
    "vfork",
    "socket",
    "socketpair",
    "connect",
    "bind",
    "listen",
    "accept",
    "accept4",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "process_madvise",
    "kcmp",
    "pidfd_open",
    "pidfd_send_signal",
    "pidfd_getfd",
    "tkill",
    "rt_sigqueueinfo",
    "rt_tgsigqueueinfo",
    "unshare",
    "setns",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsmount",
    "fspick",
    "mount_setattr",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "keyctl",
    "add_key",
    "request_key",
    "personality",
    "seccomp",
    "memfd_secret",
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "quotactl",
    "setuid",
    "setgid",
    "setreuid",
    "setregid",
    "setresuid",
    "setresgid",
    "setgroups",
    "setfsuid",
    "setfsgid",
    "settimeofday",
    "clock_settime",
    "adjtimex",
    "clock_adjtime",
    "sethostname",
    "setdomainname",
    "syslog",
    "vhangup",
    "iopl",
    "ioperm",
    "name_to_handle_at",
    "open_by_handle_at",
    "lookup_dcookie",
    "fanotify_init",
    "mknod",
    "mknodat",
)


def sandbox_unavailable() -> str | None:
    """Why runners cannot be confined on this machine, or None when they can."""
    if not sys.platform.startswith("linux"):
        return f"runners are confined with Landlock and seccomp, which {sys.platform} does not have"
    try:
        import landlock

        abi = landlock.landlock_abi_version()
    except Exception as exc:  # noqa: BLE001 - the binding raises its own errors for a missing LSM
        return f"the kernel does not offer Landlock ({exc})"
    if abi < 1:
        return "the kernel does not offer Landlock"
    try:
        import pyseccomp

        pyseccomp.SyscallFilter(defaction=pyseccomp.ALLOW)
    except Exception as exc:  # noqa: BLE001 - libseccomp missing or unusable
        return f"seccomp cannot be used (libseccomp: {exc})"
    return None


def readable_roots(extra: Iterable[str] = ()) -> list[str]:
    """The trees a runner may read: the interpreter's own (stdlib, site-packages), shared libraries,
    and `extra` (where the modules an operator trusted live)."""
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, "/usr/lib", "/usr/lib64", "/lib", "/lib64", *extra}
    found = []
    for root in sorted(roots):
        real = os.path.realpath(root)
        if real != "/" and os.path.isdir(real):
            found.append(real)
    return found


def limit_resources(memory_bytes: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (MAX_OPEN_FILES, MAX_OPEN_FILES))


def confine(read_roots: Iterable[str]) -> None:
    """Apply Landlock and seccomp to this process for good (inherited by its threads)."""
    import landlock
    import pyseccomp as seccomp

    ruleset = landlock.Ruleset()  # handles every filesystem access right the kernel knows
    ruleset.allow(*read_roots, rules=landlock.FSAccess.READ_FILE | landlock.FSAccess.READ_DIR)
    ruleset.apply()  # also sets no_new_privs, which seccomp needs

    deny = seccomp.ERRNO(errno.EPERM)
    rules = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    for name in _DENIED_SYSCALLS:
        try:
            rules.add_rule(deny, name)
        except (RuntimeError, ValueError, OSError):  # a syscall this architecture does not have
            continue
    rules.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")  # its flags live in memory: make libc use clone
    rules.add_rule(deny, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, CLONE_THREAD, 0))
    me = os.getpid()
    rules.add_rule(deny, "kill", seccomp.Arg(0, seccomp.NE, me))
    rules.add_rule(deny, "tgkill", seccomp.Arg(0, seccomp.NE, me))
    rules.load()
