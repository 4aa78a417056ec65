#!/usr/bin/env python3
"""docker_smoke.py — `make docker-smoke`: README.md's Docker quick start without a Docker engine.

No Docker engine runs on the development machines and base images cannot be pulled, so this
is a small interpreter of the Dockerfile instructions dynd's Dockerfile uses:

  FROM debian:12 / debian:12-slim  a Debian 12 root made once with debootstrap (minbase, the
                                   debian images' sources), cached in .docker-smoke/base
  RUN, COPY [--from=STAGE]         one layer each: an overlayfs upper directory, cached in
                                   .docker-smoke/layers/ under a key of its parent, the
                                   instruction, ENV / ARG / WORKDIR / USER and the copied
                                   content (as Docker's build cache); RUN runs `/bin/sh -c` in a
                                   chroot of the stage's layers, as USER, with ENV and ARG
  ARG, ENV, WORKDIR, USER, VOLUME, EXPOSE, HEALTHCHECK, CMD, LABEL, STOPSIGNAL  as Docker
  .dockerignore                    filters the build context (plain paths, globs, **/)

The commands are README.md's, from the block between `<!-- docker-smoke -->` and
`<!-- /docker-smoke -->`: `docker build` builds as above; `docker run` starts the last stage
with a throwaway layer on top, its -v bind mounts and -e variables, in new network and PID
namespaces (dynd is PID 1 and listens on the image's port as in a container, invisible to the
other processes of this machine), as the image's USER with its ENV and CMD; each `curl` line
then runs in that network namespace. Checked: the image's HEALTHCHECK command turns healthy;
every curl exits 0 with a JSON reply that is not an error; the classification's top
prediction is the MNIST label of digit.png; dynd runs as the image's unprivileged user;
SIGTERM (docker stop) makes it exit 0.

Run as root (chroot, mount, unshare); needs debootstrap and a Debian mirror ($DEBIAN_MIRROR,
default http://deb.debian.org/debian). The first run takes several minutes (debootstrap, apt,
the build); later runs reuse every cached layer whose inputs did not change.
"""
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("DOCKER_SMOKE_CACHE", REPO / ".docker-smoke")).resolve()
MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
BASES = {"debian:12", "debian:12-slim"}  # both: the debootstrapped Debian 12 root
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HOST_ENV = dict(os.environ, PATH=DEFAULT_PATH + ":" + os.environ.get("PATH", ""))


class SmokeError(Exception):
    pass


def log(msg):
    print(f"docker-smoke: {msg}", flush=True)


def sh(args, **kw):
    return subprocess.run(args, check=True, env=kw.pop("env", HOST_ENV), **kw)


def digest(*parts):
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()[:20]


# ---- the base root ----------------------------------------------------------------------

DEBIAN_SOURCES = """Types: deb
URIs: {mirror}
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


def base_root():
    base, ok, tmp = CACHE / "base", CACHE / "base.ok", CACHE / "base.tmp"
    if ok.exists():
        return base
    # debootstrap deletes its /debootstrap work folder when it succeeds
    if not (tmp / "usr/bin/apt-get").exists() or (tmp / "debootstrap").exists():
        shutil.rmtree(tmp, ignore_errors=True)
        log(f"debootstrap bookworm (minbase) from {MIRROR} (a few minutes, once)")
        sh(["debootstrap", "--variant=minbase", "bookworm", str(tmp), MIRROR],
           stdout=subprocess.DEVNULL)
    # as the debian:12 image: deb822 sources with -updates and -security, no package lists
    (tmp / "etc/apt/sources.list").unlink(missing_ok=True)
    (tmp / "etc/apt/sources.list.d/debian.sources").write_text(
        DEBIAN_SOURCES.format(mirror=MIRROR))
    for d in ("var/lib/apt/lists", "var/cache/apt/archives"):
        for f in (tmp / d).glob("*"):
            if f.is_file():
                f.unlink()
    shutil.rmtree(base, ignore_errors=True)
    tmp.rename(base)
    ok.touch()
    return base


# ---- overlay mounts of layers -------------------------------------------------------------

def mount_layers(target, layers, upper=None):
    """Mounts the layers (oldest first) over the base at target; writable with `upper`."""
    target.mkdir(parents=True, exist_ok=True)
    lower = [str(CACHE / "layers" / k) for k in reversed(layers)] + [str(CACHE / "base")]
    if upper is None and len(lower) == 1:
        sh(["mount", "--bind", "-o", "ro", lower[0], str(target)])
        return
    if upper is None:
        opts = "lowerdir=" + ":".join(lower)
    else:
        work = upper.parent / "work"
        upper.mkdir(parents=True, exist_ok=True)
        work.mkdir(parents=True, exist_ok=True)
        opts = f"lowerdir={':'.join(lower)},upperdir={upper},workdir={work}"
    sh(["mount", "-t", "overlay", "overlay", "-o", opts, str(target)])


def umount(target):
    subprocess.run(["umount", "-R", str(target)], env=HOST_ENV, stderr=subprocess.DEVNULL)


def user_ids(root, user):
    """uid:gid of USER (name or number[:group]) from the root's /etc/passwd and /etc/group."""
    name, _, group = user.partition(":")
    uid = gid = None
    for line in (root / "etc/passwd").read_text().splitlines():
        f = line.split(":")
        if f[0] == name or f[2] == name:
            uid, gid = f[2], f[3]
    if uid is None:
        if not name.isdigit():
            raise SmokeError(f"USER {user}: no such user in the image")
        uid, gid = name, name
    if group:
        gid = group
        for line in (root / "etc/group").read_text().splitlines():
            f = line.split(":")
            if f[0] == group:
                gid = f[2]
    home = "/root" if uid == "0" else "/"
    for line in (root / "etc/passwd").read_text().splitlines():
        f = line.split(":")
        if f[2] == uid:
            home = f[5]
    return uid, gid, home


def container_env(root, env, user):
    uid, gid, home = user_ids(root, user)
    e = {"PATH": DEFAULT_PATH, "HOSTNAME": "dynd-smoke", "HOME": home}
    e.update(env)
    return uid, gid, [f"{k}={v}" for k, v in e.items()]


# ---- the build context and .dockerignore --------------------------------------------------

def ignore_regexes(path):
    rx = []
    if not path.exists():
        return rx
    for line in path.read_text().splitlines():
        p = line.strip()
        if not p or p.startswith("#"):
            continue
        if p.startswith("!"):
            raise SmokeError(f".dockerignore: exceptions ({p}) are not supported here")
        p = p.strip("/")
        out, i = "", 0
        while i < len(p):
            if p.startswith("**/", i):
                out, i = out + "(?:.*/)?", i + 3
            elif p.startswith("**", i):
                out, i = out + ".*", i + 2
            elif p[i] == "*":
                out, i = out + "[^/]*", i + 1
            elif p[i] == "?":
                out, i = out + "[^/]", i + 1
            else:
                out, i = out + re.escape(p[i]), i + 1
        rx.append(re.compile("^" + out + "(?:/.*)?$"))
    return rx


def make_context(src):
    """A copy of the build context src without what .dockerignore excludes."""
    ctx = CACHE / "context"
    shutil.rmtree(ctx, ignore_errors=True)
    ctx.mkdir(parents=True)
    rx = ignore_regexes(src / ".dockerignore")
    for dirpath, dirnames, filenames in os.walk(src):
        rel_dir = os.path.relpath(dirpath, src)
        keep = []
        for d in sorted(dirnames):
            rel = os.path.normpath(os.path.join(rel_dir, d))
            full = Path(dirpath) / d
            if full.resolve() == CACHE or any(r.match(rel) for r in rx):
                continue
            if full.is_symlink():
                filenames.append(d)
                continue
            (ctx / rel).mkdir()
            keep.append(d)
        dirnames[:] = keep
        for f in sorted(filenames):
            rel = os.path.normpath(os.path.join(rel_dir, f))
            if any(r.match(rel) for r in rx):
                continue
            s = Path(dirpath) / f
            if s.is_symlink():
                os.symlink(os.readlink(s), ctx / rel)
            else:
                shutil.copy2(s, ctx / rel)
    return ctx


def tree_digest(paths):
    h = hashlib.sha256()
    for p in paths:
        items = [p] if not p.is_dir() or p.is_symlink() else sorted(p.rglob("*"))
        for f in items:
            h.update(str(f.relative_to(p.parent) if f != p else p.name).encode())
            st = f.lstat()
            h.update(str(st.st_mode).encode())
            if f.is_symlink():
                h.update(os.readlink(f).encode())
            elif f.is_file():
                h.update(f.read_bytes())
    return h.hexdigest()


# ---- the Dockerfile -----------------------------------------------------------------------

def parse_dockerfile(path):
    out, cur = [], ""
    for raw in path.read_text().splitlines():
        s = raw.strip()
        if s.startswith("#") or (not cur and not s):
            continue
        if s.endswith("\\"):
            cur += s[:-1].rstrip() + " "
            continue
        cur += s
        instr, _, rest = cur.partition(" ")
        out.append((instr.upper(), rest.strip()))
        cur = ""
    return out


def json_or_shell(rest):
    """Exec form (a JSON array) or shell form of RUN / CMD / HEALTHCHECK CMD."""
    if rest.startswith("["):
        return json.loads(rest)
    return ["/bin/sh", "-c", rest]


class Stage:
    def __init__(self, base, name, build_args):
        self.base, self.name = base, name
        self.layers, self.env, self.args = [], {}, {}
        self.workdir, self.user = "/", "root"
        self.cmd, self.healthcheck = None, None
        self.volumes, self.expose = [], []
        self.key = digest("FROM", base)
        self.build_args = build_args

    def expand(self, s):
        vals = {**self.args, **self.env}

        def sub(m):
            name = m.group(1) or m.group(2)
            return vals.get(name, "")
        return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)", sub, s)

    def state(self):
        return json.dumps([self.env, self.args, self.workdir, self.user], sort_keys=True)


def add_layer(stage, key, what, action):
    """Runs action(root) in a new layer over the stage, or reuses the cached layer `key`."""
    done = CACHE / "layers" / key
    if done.exists():
        log(f"  {what[:90]}  (cached)")
    else:
        log(f"  {what[:90]}")
        tmp = CACHE / "tmp" / key
        shutil.rmtree(tmp, ignore_errors=True)
        mnt = tmp / "mnt"
        mount_layers(mnt, stage.layers, upper=tmp / "upper")
        try:
            (mnt / stage.workdir.lstrip("/")).mkdir(parents=True, exist_ok=True)
            action(mnt)
        finally:
            umount(mnt)
        (tmp / "upper").rename(done)
        shutil.rmtree(tmp, ignore_errors=True)
    stage.layers.append(key)
    stage.key = key


def run_in_root(root, argv, env, user, workdir):
    uid, gid, envl = container_env(root, env, user)
    for m in ("proc", "dev"):
        (root / m).mkdir(exist_ok=True)
    sh(["mount", "-t", "proc", "proc", str(root / "proc")])
    sh(["mount", "--rbind", "/dev", str(root / "dev")])
    if (root / "etc/resolv.conf").is_file():
        sh(["mount", "--bind", "/etc/resolv.conf", str(root / "etc/resolv.conf")])
    try:
        sh(["chroot", f"--userspec={uid}:{gid}", str(root), "/usr/bin/env", "-i", "-C", workdir,
            *envl, *argv])
    finally:
        umount(root / "proc")
        umount(root / "dev")
        umount(root / "etc/resolv.conf")


def copy_into(src_root, srcs, dest, root):
    """Docker COPY: a folder's content, or files, into dest (a folder when it ends in / or
    several sources are given), owned by root."""
    dest_dir = dest.endswith("/") or len(srcs) > 1
    target = root / dest.lstrip("/")
    for s in srcs:
        sp = src_root / s.lstrip("/")
        if not sp.exists() and not sp.is_symlink():
            raise SmokeError(f"COPY: {s} not found")
        if sp.is_dir() and not sp.is_symlink():
            target.mkdir(parents=True, exist_ok=True)
            pack = subprocess.Popen(["tar", "-C", str(sp), "-cf", "-", "--owner=0", "--group=0",
                                     "--numeric-owner", "."], stdout=subprocess.PIPE)
            sh(["tar", "-C", str(target), "-xpf", "-", "--no-overwrite-dir"], stdin=pack.stdout)
            if pack.wait():
                raise SmokeError(f"COPY {s}: tar failed")
        else:
            t = target / sp.name if dest_dir or target.is_dir() else target
            t.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(sp, t, follow_symlinks=False)
            os.lchown(t, 0, 0)


def build(dockerfile, context, build_args):
    """Builds every stage; returns the last one."""
    base_root()
    (CACHE / "layers").mkdir(parents=True, exist_ok=True)
    ctx = make_context(context)
    stages, st = {}, None
    for instr, rest in parse_dockerfile(dockerfile):
        if instr == "FROM":
            m = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
            if not m or m.group(1) not in BASES:
                raise SmokeError(f"FROM {rest}: only {sorted(BASES)} can be made here")
            st = Stage(m.group(1), m.group(2) or str(len(stages)), build_args)
            stages[st.name] = st
            log(f"stage {st.name} FROM {st.base}")
            continue
        if st is None:
            raise SmokeError(f"{instr} before FROM is not supported here")
        if instr == "ARG":
            n, eq, d = rest.partition("=")
            st.args[n] = build_args.get(n, d if eq else "")
        elif instr == "ENV":
            toks = shlex.split(rest)
            pairs = ([t.partition("=")[::2] for t in toks] if all("=" in t for t in toks)
                     else [(toks[0], " ".join(toks[1:]))])
            for k, v in pairs:
                st.env[k] = st.expand(v)
        elif instr == "WORKDIR":
            st.workdir = os.path.normpath(os.path.join(st.workdir, st.expand(rest)))
        elif instr == "USER":
            st.user = st.expand(rest)
        elif instr == "RUN":
            argv = json_or_shell(rest)
            key = digest(st.key, "RUN", rest, st.state())
            env = {**st.args, **st.env}
            add_layer(st, key, "RUN " + rest,
                      lambda root: run_in_root(root, argv, env, st.user, st.workdir))
        elif instr == "COPY":
            toks = shlex.split(st.expand(rest))
            frm = None
            while toks and toks[0].startswith("--"):
                opt = toks.pop(0)
                if opt.startswith("--from="):
                    frm = opt[7:]
                else:
                    raise SmokeError(f"COPY {opt} is not supported here")
            srcs, dest = toks[:-1], toks[-1]
            if not dest.startswith("/"):
                dest = os.path.join(st.workdir, dest) + ("/" if dest.endswith("/") else "")
            if frm is None:
                key = digest(st.key, "COPY", rest, st.state(),
                             tree_digest([ctx / s for s in srcs]))
                add_layer(st, key, "COPY " + rest, lambda root: copy_into(ctx, srcs, dest, root))
            else:
                src = stages.get(frm)
                if src is None:
                    raise SmokeError(f"COPY --from={frm}: no such stage")
                # keyed by the copied content (as Docker): an unchanged file keeps the layers
                # after it cached whatever else the other stage rebuilt
                view = CACHE / "tmp" / ("from-" + src.name)
                umount(view)
                mount_layers(view, src.layers)
                try:
                    key = digest(st.key, "COPY", rest, st.state(),
                                 tree_digest([view / s.lstrip("/") for s in srcs]))
                    add_layer(st, key, "COPY " + rest,
                              lambda root: copy_into(view, srcs, dest, root))
                finally:
                    umount(view)
        elif instr == "VOLUME":
            v = rest if rest.startswith("[") else json.dumps(shlex.split(rest))
            st.volumes += [st.expand(x) for x in json.loads(v)]
        elif instr == "EXPOSE":
            st.expose += [st.expand(x).split("/")[0] for x in rest.split()]
        elif instr == "CMD":
            st.cmd = json_or_shell(rest)
        elif instr == "HEALTHCHECK":
            m = re.fullmatch(r"((?:--\S+\s+)*)CMD\s+(.*)", rest)
            if not m:
                raise SmokeError(f"HEALTHCHECK {rest}: not understood")
            st.healthcheck = json_or_shell(m.group(2))
        elif instr in ("LABEL", "STOPSIGNAL"):
            pass
        else:
            raise SmokeError(f"{instr} is not supported here")
    if st is None:
        raise SmokeError(f"{dockerfile}: no FROM")
    # keep the cache to this build's layers
    used = {k for s in stages.values() for k in s.layers}
    for d in (CACHE / "layers").iterdir():
        if d.name not in used:
            shutil.rmtree(d)
    return st


# ---- README's commands --------------------------------------------------------------------

def readme_commands():
    text = (REPO / "README.md").read_text()
    m = re.search(r"<!-- docker-smoke -->(.*?)<!-- /docker-smoke -->", text, re.S)
    if not m:
        raise SmokeError("README.md has no <!-- docker-smoke --> block")
    cmds, cur = [], ""
    for line in m.group(1).splitlines():
        s = line.strip()
        if s.startswith("```") or s.startswith("#") or not s:
            continue
        if s.endswith("\\"):
            cur += s[:-1] + " "
            continue
        cmds.append(cur + s)
        cur = ""
    return cmds


def parse_build(cmd):
    toks = shlex.split(cmd)[2:]
    tag, dockerfile, args, ctx = None, None, {}, None
    while toks:
        t = toks.pop(0)
        if t in ("-t", "--tag"):
            tag = toks.pop(0)
        elif t in ("-f", "--file"):
            dockerfile = toks.pop(0)
        elif t == "--build-arg":
            k, _, v = toks.pop(0).partition("=")
            args[k] = v
        elif t.startswith("-"):
            raise SmokeError(f"docker build {t} is not supported here")
        else:
            ctx = t
    ctx = (REPO / ctx).resolve()
    return tag, (ctx / (dockerfile or "Dockerfile")), ctx, args


def parse_run(cmd):
    # the README's words as the shell gives them ($PWD: the repository, where it is run)
    toks = subprocess.run(["bash", "-c", 'printf "%s\\0" ' + cmd[len("docker run"):]],
                          cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")[:-1]
    toks = [t.decode() for t in toks]
    r = {"ports": [], "volumes": [], "env": {}, "image": None, "cmd": []}
    while toks:
        t = toks.pop(0)
        if t in ("-d", "--detach", "--rm", "-it", "-i", "-t", "--init"):
            continue
        if t == "--name":
            toks.pop(0)
        elif t in ("-p", "--publish"):
            host, _, cont = toks.pop(0).rpartition(":")
            r["ports"].append((host.rpartition(":")[2], cont))
        elif t in ("-v", "--volume"):
            parts = toks.pop(0).split(":")
            r["volumes"].append((parts[0], parts[1], len(parts) > 2 and "ro" in parts[2]))
        elif t in ("-e", "--env"):
            k, eq, v = toks.pop(0).partition("=")
            r["env"][k] = v if eq else os.environ.get(k, "")
        elif t.startswith("-"):
            raise SmokeError(f"docker run {t} is not supported here")
        else:
            r["image"], r["cmd"] = t, toks
            break
    return r


# ---- docker run ---------------------------------------------------------------------------

def child_pid(pid, timeout=30):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            kids = []
        if kids:
            return int(kids[0])
        time.sleep(0.05)
    raise SmokeError("the container's first process did not start")


def mnist_label():
    with open(REPO / "data/mnist/t10k-labels-idx1-ubyte", "rb") as f:
        return f.read(9)[8]  # digit.png is test image 0 (Makefile: digit.png)


def run_container(st, run, curls):
    for host, cont in run["ports"]:
        if host != cont:
            raise SmokeError(f"-p {host}:{cont}: only equal ports here (the container's "
                             "network namespace is reached directly)")
    box = CACHE / "tmp" / "container"
    umount(box / "mnt")
    shutil.rmtree(box, ignore_errors=True)
    root = box / "mnt"
    mount_layers(root, st.layers, upper=box / "upper")
    logf = box / "dynd.log"
    proc = None
    try:
        for src, dst, ro in run["volumes"]:
            tgt = root / dst.lstrip("/")
            tgt.mkdir(parents=True, exist_ok=True)
            sh(["mount", "--bind", src, str(tgt)])
            if ro:
                sh(["mount", "-o", "remount,bind,ro", str(tgt)])
        (root / st.workdir.lstrip("/")).mkdir(parents=True, exist_ok=True)
        uid, gid, envl = container_env(root, {**st.env, **run["env"]}, st.user)
        argv = run["cmd"] or st.cmd
        # new network and PID namespaces; the child execs chroot -> env -> CMD: PID 1
        script = ('ip link set lo up && mount -t proc proc "$0/proc" && u=$1 w=$2 && '
                  'shift 2 && exec chroot --userspec="$u" "$0" /usr/bin/env -i -C "$w" "$@"')
        with open(logf, "wb") as lf:
            proc = subprocess.Popen(
                ["unshare", "--net", "--pid", "--fork", "--kill-child", "--", "/bin/sh", "-c",
                 script, str(root), f"{uid}:{gid}", st.workdir, *envl, *argv],
                stdout=lf, stderr=subprocess.STDOUT, env=HOST_ENV)
        pid1 = child_pid(proc.pid)
        netns = f"--net=/proc/{pid1}/ns/net"
        log(f"docker run: {' '.join(argv)} as {st.user} ({uid}:{gid}), pid {pid1}")
        end = time.monotonic() + 120
        while b"dynd listening on" not in logf.read_bytes():
            if proc.poll() is not None or time.monotonic() > end:
                raise SmokeError("dynd did not start:\n" + logf.read_text(errors="replace"))
            time.sleep(0.2)
        isa = re.search(rb'"isa":"(\w+)"', logf.read_bytes())
        log(f"dynd's kernels: {isa.group(1).decode() if isa else '?'} (engine/cpu/isa.h)")
        status = (root / "proc/1/status").read_text()
        real_uid = re.search(r"^Uid:\s+(\d+)", status, re.M).group(1)
        if real_uid != uid or uid == "0":
            raise SmokeError(f"PID 1 runs as uid {real_uid}, want the image's user {uid} (not 0)")
        log(f"PID 1 is {status.splitlines()[0].split()[1]}, uid {real_uid}")
        if st.healthcheck:
            for attempt in range(60):
                hc = subprocess.run(["nsenter", netns, "--", "chroot", f"--userspec={uid}:{gid}",
                                     str(root), "/usr/bin/env", "-i", *envl, *st.healthcheck],
                                    env=HOST_ENV, capture_output=True)
                if hc.returncode == 0:
                    log(f"HEALTHCHECK healthy (attempt {attempt + 1})")
                    break
                time.sleep(1)
            else:
                raise SmokeError("HEALTHCHECK never healthy: " + hc.stdout.decode() +
                                 hc.stderr.decode())
        for c in curls:
            out = subprocess.run(["nsenter", netns, "--", "bash", "-c", c], cwd=REPO,
                                 env=HOST_ENV, capture_output=True)
            body = out.stdout.decode(errors="replace")
            log(f"$ {c}\n{body.strip()}")
            if out.returncode:
                raise SmokeError(f"curl exited {out.returncode}: {out.stderr.decode()}")
            try:
                reply = json.loads(body)
            except ValueError:
                raise SmokeError("the reply is not JSON")
            if isinstance(reply, dict) and "error" in reply:
                raise SmokeError("the reply is an error")
            if "/classify" in c:
                want = mnist_label()
                top = reply["predictions"][0]
                if top["index"] != want:
                    raise SmokeError(f"classified as {top}, digit.png is a {want}")
                log(f"digit.png (a {want}) classified as {top['label']}")
        os.kill(pid1, signal.SIGTERM)  # docker stop
        try:
            rc = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            raise SmokeError("dynd did not stop within 60 s of SIGTERM")
        if rc != 0:
            raise SmokeError(f"dynd exited {rc} on SIGTERM:\n" + logf.read_text())
        log("docker stop: dynd exited 0")
    finally:
        if proc and proc.poll() is None:
            proc.kill()
            proc.wait()
        umount(root)


def main():
    if os.geteuid() != 0:
        raise SmokeError("run as root (chroot, mount, unshare)")
    if not os.environ.get("DOCKER_SMOKE_NS"):
        # a private mount namespace: every mount below disappears with this process
        os.environ["DOCKER_SMOKE_NS"] = "1"
        os.execvpe("unshare", ["unshare", "--mount", "--propagation", "private", "--",
                               sys.executable, *sys.argv], HOST_ENV | {"DOCKER_SMOKE_NS": "1"})
    for f in ("digit.png", "models/mnist.dyn", "data/mnist/t10k-labels-idx1-ubyte"):
        if not (REPO / f).exists():
            raise SmokeError(f"{f} is missing (make docker-smoke makes it)")
    cmds = readme_commands()
    builds = [c for c in cmds if c.startswith("docker build")]
    runs = [c for c in cmds if c.startswith("docker run")]
    curls = [c for c in cmds if c.startswith("curl")]
    if len(builds) != 1 or len(runs) != 1 or not curls or len(builds + runs + curls) != len(cmds):
        raise SmokeError("the README block must hold one docker build, one docker run, then "
                         f"curl lines: {cmds}")
    tag, dockerfile, ctx, args = parse_build(builds[0])
    log(f"$ {builds[0]}")
    t0 = time.monotonic()
    st = build(dockerfile, ctx, args)
    log(f"built {tag} in {time.monotonic() - t0:.0f} s: {len(st.layers)} layers, user "
        f"{st.user}, volumes {st.volumes}, ports {st.expose}, CMD {st.cmd}")
    run = parse_run(runs[0])
    if run["image"] != tag:
        raise SmokeError(f"docker run {run['image']}: the README built {tag}")
    log(f"$ {runs[0]}")
    run_container(st, run, curls)
    log("passed")


if __name__ == "__main__":
    try:
        main()
    except (SmokeError, subprocess.CalledProcessError) as e:
        print(f"docker-smoke: FAILED: {e}", file=sys.stderr)
        sys.exit(1)
