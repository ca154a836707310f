"""sshd: OpenSSH with key-only logins, host keys kept on the volume, and the SSH command each provider's console
shows working as shown (RunPod and Vast tell users `ssh root@HOST -p PORT`)."""
from __future__ import annotations

import base64
import hashlib
import logging
import os
import pwd
from collections import Counter
import shlex
import shutil
import subprocess
import time
from pathlib import Path


from entrypoint import login_user
from entrypoint.context import PodContext
from entrypoint.probes import local_host, tcp_banner
from entrypoint.registry import Activity, LastUse, Program, Readiness, Restart, Service, discover
from services.sshd.keys import advise, sort_keys
from services.sshd.sessions import SessionClock, describe
from services.sshd.settings import SshSettings

log = logging.getLogger("podvisor")
HOST_KEY_TYPES = ("ed25519", "ecdsa")
"""Generated at first boot in milliseconds each; an RSA key took 1.4 s of every fresh pod's boot, before sshd
could start. ECDSA covers the clients that lack ed25519 (FIPS builds, old Java SSH libraries)."""
KEPT_HOST_KEY_TYPES = ("rsa",)
"""Served when an earlier boot left one on the volume, so clients that recorded it are not told it changed;
never generated."""
SYSTEM_KEYS_ROOT = Path("/etc/ssh/podvisor")
"""Where a root podvisor keeps the accounts' authorized keys: root-owned along its whole path, so sshd's
StrictModes accepts them whoever owns the volume (RunPod's /workspace is the login user's once podvisor has made
it theirs, and root's keys under it were refused). One folder per state dir, so two stacks never share keys."""


def _settings(ctx: PodContext) -> SshSettings:
    return ctx.settings(SshSettings)


def _dir(ctx: PodContext) -> Path:
    return ctx.paths.service_dir("sshd")


def permit_root(ctx: PodContext) -> bool:
    """SSH_PERMIT_ROOT, defaulting to what the provider's console expects; always when the login user is root
    (SSH_USER=root), who would otherwise be locked out with their key installed."""
    chosen = _settings(ctx).ssh_permit_root
    if login_user.name(ctx) == "root":
        if chosen is False:
            log.warning("sshd: SSH_USER=root needs root logins: SSH_PERMIT_ROOT=false is ignored")
        return True
    return ctx.cloud.console_logs_in_as_root if chosen is None else chosen


def command_user(ctx: PodContext) -> str:
    """The user in the SSH command we print: root where the provider's console says root and root may log
    in, the login user everywhere else."""
    return "root" if permit_root(ctx) and ctx.cloud.console_logs_in_as_root else login_user.name(ctx)


def endpoint(ctx: PodContext) -> str:
    return ctx.cloud.endpoint(_settings(ctx).ssh_port, "ssh", command_user(ctx))


def fingerprints(ctx: PodContext) -> list[str]:
    """`ED25519 SHA256:...` of each host key, for users who check what their client shows on first connect:
    OpenSSH's fingerprint (the unpadded base64 of the key blob's sha256), computed here, so `podvisor status`
    and the HEALTHCHECK start no program."""
    found = []
    for kind in HOST_KEY_TYPES + KEPT_HOST_KEY_TYPES:
        try:
            blob = base64.b64decode((_dir(ctx) / f"ssh_host_{kind}_key.pub").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
        found.append(f"{kind.upper()} SHA256:{base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip('=')}")
    return found


def _host_keys(folder: Path) -> list[Path]:
    """Generated once and kept on the volume, so a restarted pod does not trip "host key changed"."""
    keys = []
    for kind in HOST_KEY_TYPES:
        key = folder / f"ssh_host_{kind}_key"
        if not key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "podvisor", "-f", str(key)],
                           check=True, capture_output=True)
            log.info("sshd: generated %s host key", kind)
        keys.append(key)
    return keys + [key for kind in KEPT_HOST_KEY_TYPES if (key := folder / f"ssh_host_{kind}_key").exists()]


def keys_dir(ctx: PodContext) -> Path:
    """The folder of the accounts' authorized keys (one file per account): a root-owned one under /etc when
    podvisor runs as root and /etc is writable, else the state dir's (a native run as a normal user)."""
    if os.geteuid() == 0:
        tag = hashlib.sha256(str(ctx.state_dir).encode()).hexdigest()[:12]
        folder = SYSTEM_KEYS_ROOT / tag / "authorized_keys"
        try:
            folder.mkdir(mode=0o755, parents=True, exist_ok=True)
            return folder
        except OSError as exc:  # a read-only root filesystem (Kubernetes readOnlyRootFilesystem)
            log.warning("sshd: %s is not writable (%s); keeping authorized keys in the state dir", folder,
                        exc.strerror or exc)
    return _dir(ctx) / "authorized_keys"


def refused_by_strict_modes(path: Path, uid: int) -> str | None:
    """Why sshd (StrictModes, on by default) refuses `path` as a user's authorized keys file, as sshd says it:
    the file and every folder above it must belong to root or that user and be writable by nobody else."""
    for part in [path, *path.parents]:
        try:
            info = part.stat()
        except OSError:
            return None  # no file yet: nothing is refused, nothing is accepted either
        if (info.st_uid not in (0, uid)) or info.st_mode & 0o022:
            kind = "file" if part == path else "directory"
            return f"bad ownership or modes for {kind} {part}"
    return None


def _config(ctx: PodContext, host_keys: list[Path], keys: Path) -> str:
    settings, folder = _settings(ctx), _dir(ctx)
    lines = [
        "# Generated by podvisor at boot.",
        f"Port {settings.ssh_port}",
        f"ListenAddress {ctx.core.podvisor_bind_host}",
        *[f"HostKey {key}" for key in host_keys],
        f"PidFile {folder / 'sshd.pid'}",
        f"AuthorizedKeysFile .ssh/authorized_keys {keys}/%u",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitEmptyPasswords no",
        f"PermitRootLogin {'prohibit-password' if permit_root(ctx) else 'no'}",
        "UsePAM no",
        "PrintMotd yes",
        "X11Forwarding no",
        "AllowTcpForwarding yes",
        "ClientAliveInterval 60",
        "AcceptEnv LANG LC_*",
    ]
    sftp = next((p for p in ("/usr/lib/openssh/sftp-server", "/usr/libexec/sftp-server") if Path(p).exists()), None)
    if sftp:
        lines.append(f"Subsystem sftp {sftp}")
    return "\n".join(lines) + "\n"


def _motd(ctx: PodContext) -> str:
    lines = [f"podvisor on {ctx.cloud.provider}" + (f" ({ctx.cloud.instance_id})" if ctx.cloud.instance_id else "")]
    for svc in discover():
        if svc.endpoint is not None and svc.name in ctx.config.sections and svc.enabled(ctx):
            lines.append(f"  {svc.name:<10} {svc.endpoint(ctx)}")
    lines.append("Run `podvisor status` for services, uploads and the idle countdown.")
    return "\n".join(lines) + "\n"


def prepare(ctx: PodContext) -> None:
    settings, folder = _settings(ctx), _dir(ctx)
    if not shutil.which("sshd", path="/usr/sbin:/usr/local/sbin:" + os.environ.get("PATH", "")):
        raise RuntimeError("sshd is not installed (Debian/Ubuntu: apt-get install openssh-server)")
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    host_keys = _host_keys(folder)
    user = login_user.name(ctx)
    good, bad = sort_keys(settings)
    for where, problem in bad:
        log.error("sshd: %s %s; skipped", where, problem)
    keys = keys_dir(ctx)
    keys.mkdir(parents=True, exist_ok=True)
    keys.chmod(0o755)
    lines = "".join(f"{key}\n" for key in good.values())
    for account in accounts(ctx):
        (keys / account).write_text(lines)
        (keys / account).chmod(0o644)
        if (refused := refused_by_strict_modes(keys / account, pwd.getpwnam(account).pw_uid)) is not None:
            log.error("sshd: %s would refuse every key of %s: %s (StrictModes); move PODVISOR_STATE_DIR out of "
                      "folders other users can write", account, refused)
    sources = Counter(where.rsplit(" key #", 1)[0] for where in good)
    log.info("sshd: %d authorized key(s) for %s%s (%s), %d skipped", len(good), user,
             " and root" if permit_root(ctx) and user != "root" else "",
             ", ".join(f"{n} from {source}" for source, n in sources.items()) or "none given", len(bad))
    if not good:
        log.warning("sshd: no authorized key: nobody can log in. Set PUBLIC_KEY (or SSH_AUTHORIZED_KEYS) to "
                    "your public key, e.g. the line in ~/.ssh/id_ed25519.pub")
    (folder / "motd").write_text(_motd(ctx))
    (folder / "sshd_config").write_text(_config(ctx, host_keys, keys))
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        Path("/etc/motd").write_text((folder / "motd").read_text())
    check = subprocess.run([_sshd(), "-t", "-f", str(folder / "sshd_config")], capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"sshd rejects its config: {check.stderr.strip()}")


def _sshd() -> str:
    return shutil.which("sshd", path="/usr/sbin:/usr/local/sbin:" + os.environ.get("PATH", "")) or "/usr/sbin/sshd"


def accounts(ctx: PodContext) -> list[str]:
    """Who may log in with the authorized keys: the login user, and root where root logins are allowed."""
    user = login_user.name(ctx)
    return [user, "root"] if permit_root(ctx) and user != "root" else [user]


def _keys_in_use(ctx: PodContext) -> Path | None:
    """The keys folder the running sshd was configured with (its config is the record, whoever asks)."""
    try:
        config = (_dir(ctx) / "sshd_config").read_text()
    except OSError:
        return None
    for line in config.splitlines():
        if line.startswith("AuthorizedKeysFile "):
            return Path(line.split()[-1]).parent
    return None


def ready(ctx: PodContext) -> Readiness:
    """Ready when sshd answers and would accept the key of the account the printed SSH command logs in as: an
    sshd that refuses every key (StrictModes) is no way in, whatever its banner says."""
    answering = tcp_banner(local_host(ctx.core.podvisor_bind_host), _settings(ctx).ssh_port, b"SSH-")
    keys = _keys_in_use(ctx)
    if not answering.ready or keys is None:
        return answering
    account = command_user(ctx)
    try:
        refused = refused_by_strict_modes(keys / account, pwd.getpwnam(account).pw_uid)
    except KeyError:
        return answering
    if refused:
        return Readiness(False, f"sshd refuses {account}'s keys: {refused} (StrictModes)")
    return answering


CLOCK = SessionClock()
"""The autostop asks `activity` once per poll, in one long-lived process: session CPU totals carry over."""


def activity(ctx: PodContext) -> LastUse:
    """Authenticated SSH sessions in use (sessions.py says what counts); an open TCP connection does not."""
    now = time.time()
    sessions = CLOCK.sessions(str(_dir(ctx) / "sshd_config"), now)
    return describe(sessions, _settings(ctx).autostop_ssh_idle_minutes * 60, now)


SERVICE = Service(
    name="sshd",
    settings=SshSettings,
    advise=advise,
    enabled=lambda ctx: _settings(ctx).ssh_enabled,
    program=Program(command=lambda ctx: shlex.join([_sshd(), "-D", "-e", "-f", str(_dir(ctx) / "sshd_config")]),
                    priority=10, stop_wait=3, restart=Restart(never_give_up=True)),
    prepare=prepare,
    ready=ready,
    interactive=True,
    endpoint=endpoint,
    status=lambda ctx: {"summary": "host keys " + ", ".join(fingerprints(ctx))},
    capabilities=(Activity(last=activity),),
)
