#!/usr/bin/env python3
"""strata against Packer 1.6.6's QEMU builder on images/demo.toml's three stages.

Run through bench/run.sh (it installs Packer and xorriso, builds the base image and strata).
This file only measures: it copies the demo (definition, app, scripts) into a work folder,
builds it with strata and with three chained Packer builds (bench/packer/STAGE.json), in four
scenarios, and writes bench/results/latest.{json,md} plus dated copies.

Scenarios, in this order, on one copy of the demo per run:
  a  cold build of all stages (strata: a fresh store; Packer: base, app-base, final)
  b  rebuild with nothing changed (Packer has no cache: a Packer user reruns the three builds)
  c  rebuild after a change to the final stage's app (a line appended to app.py)
     (Packer rebuilds final on the previous app-base output)
  d  rebuild after a change to the base stage's script (a line appended to harden.sh)
     (Packer rebuilds all three; strata resumes the source's first boot it saved in (a))
then, strata only, another definition on the same source (its first layer, from that saved
first boot); then `strata export` of the final stage against a bare `qemu-img convert` with the
same options. In (a), Packer also runs the three stages' steps in one build (bench/packer's
three templates merged: what a Packer user without layers runs) as a second comparison.

Per scenario and tool: wall seconds; guest boot seconds (from VM start to the console line
cloud-init prints when it has finished, host-timestamped; strata's console events, Packer's
serial log); step seconds (strata: its step_finished events; Packer: from the first step
provisioner's start to the cleanup provisioner's start, host-timestamped from its output);
overhead = wall - boot - steps; bytes on disk (allocated) of every stage's output.

`python3 bench/bench.py --render FILE.json` prints a saved result's report again.
Environment: BENCH_RUNS (default 1), BENCH_WORK (work folder; default a new one under
/var/tmp), BENCH_KEEP=1 (keep the work folder), STRATA (the strata binary; default
target/release/strata).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
DEMO = REPO / "images" / "demo.toml"
SEED_TEMPLATE = REPO / "seeds" / "default.yaml.j2"
BASE_IMAGE = REPO / ".cache" / "base-image" / "debian-12-strata-amd64.qcow2"
STAGES = ["base", "app-base", "final"]
SCENARIOS = [
    ("a", "cold build of all stages"),
    ("b", "rebuild, nothing changed"),
    ("c", "rebuild after a change to final's app"),
    ("d", "rebuild after a change to base's hardening script"),
]
PACKER_PLAN = {"a": STAGES, "b": STAGES, "c": ["final"], "d": STAGES}
BUILD_DEADLINE = 60 * 60  # one tool command, seconds
# `strata export`'s qemu-img options (src/qemu/img.rs convert_args, src/export/mod.rs).
CONVERT_OPTIONS = ["-O", "qcow2", "-c", "-o", "compression_type=zstd", "-W", "-m", "8"]
CLOUD_INIT_DONE = re.compile(r"Cloud-init v\. \S+ finished at .*Up ([0-9.]+) seconds")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


# --- small helpers -------------------------------------------------------------------------


def allocated(path: Path) -> int:
    """Bytes on disk of a file, or of a folder's files."""
    if path.is_dir():
        return sum(allocated(p) for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    return path.stat().st_blocks * 512


def run_quiet(argv: list[str], **kw) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, **kw)
    if done.returncode != 0:
        raise BenchError(f"failed to run {' '.join(map(str, argv))}: {done.stderr.strip()[-2000:]}")
    return done.stdout


def size_mib(text: str) -> int:
    m = re.fullmatch(r"(\d+)\s*([KMGT]?)i?B?", text.strip(), re.I)
    if not m:
        raise BenchError(f"cannot read the size {text!r} in {DEMO}")
    scale = {"": 1 / (1024 * 1024), "K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}
    return int(int(m.group(1)) * scale[m.group(2).upper()])


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


class LoadSampler(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append(loadavg()[0])
            self.stop.wait(15)


def stop_group(proc: subprocess.Popen) -> None:
    """Asks a process group started by us to stop (SIGINT), then kills it (Packer can sit in
    an SSH handshake for a minute ignoring SIGINT)."""
    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


# --- the seed Packer gets: strata's own template, rendered the same way --------------------


def render_seed(context: dict) -> str:
    """Renders seeds/default.yaml.j2 for the subset of minijinja it uses ({{ x | tojson }},
    {{ x | indent(N) }}); anything else is an error, so a changed template is noticed."""
    text = SEED_TEMPLATE.read_text()
    if "{%" in text:
        raise BenchError(f"{SEED_TEMPLATE} uses template statements; teach bench.py's render_seed them")

    def value(expr: str) -> str:
        parts = [p.strip() for p in expr.split("|")]
        path = parts[0].split(".")
        val = context
        for p in path:
            val = val[p]
        for filt in parts[1:]:
            if filt == "tojson":
                val = json.dumps(val, ensure_ascii=False)
            elif m := re.fullmatch(r"indent\((\d+)\)", filt):
                pad = " " * int(m.group(1))
                val = str(val).replace("\n", "\n" + pad)
            else:
                raise BenchError(f"{SEED_TEMPLATE}: filter {filt!r} is unknown to bench.py")
        return str(val)

    return re.sub(r"\{\{(.*?)\}\}", lambda m: value(m.group(1)), text)


# --- the demo tree each run builds ---------------------------------------------------------


def make_tree(dest: Path) -> Path:
    (dest / "images").mkdir(parents=True)
    shutil.copy2(DEMO, dest / "images" / "demo.toml")
    shutil.copytree(REPO / "images" / "demo", dest / "images" / "demo")
    (dest / "scripts").mkdir()
    for name in ["harden.sh", "app-base.sh", "install-app.sh"]:
        shutil.copy2(REPO / "scripts" / name, dest / "scripts" / name)
    (dest / ".cache").symlink_to(REPO / ".cache")
    return dest / "images" / "demo.toml"


def apply_change(tree: Path, scenario: str, run: int) -> str | None:
    if scenario == "c":
        target = tree / "images" / "demo" / "app" / "app.py"
    elif scenario == "d":
        target = tree / "scripts" / "harden.sh"
    else:
        return None
    with target.open("a") as f:
        f.write(f"# bench: scenario {scenario}, run {run}, {time.time():.3f}\n")
    return str(target.relative_to(tree))


# --- strata ----------------------------------------------------------------------------------


def strata_build(
    strata: Path, store: Path, definition: Path, logs: Path, stages: list[str] = STAGES
) -> dict:
    out, err = logs / "events.jsonl", logs / "stderr.log"
    argv = [str(strata), "--store", str(store), "--log-format", "json", "build", str(definition)]
    start = time.monotonic()
    with out.open("w") as o, err.open("w") as e:
        proc = subprocess.Popen(argv, stdout=o, stderr=e, cwd=definition.parent)
        try:
            rc = proc.wait(timeout=BUILD_DEADLINE)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)
            proc.wait(60)
            raise BenchError(f"strata build ran past {BUILD_DEADLINE} s; see {logs}")
    wall = time.monotonic() - start
    if rc != 0:
        raise BenchError(f"strata build failed (exit {rc}): {err.read_text()[-3000:]} (logs in {logs})")
    events = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    keys: dict[str, str] = {}
    built, boots, restores, accel = [], [], [], None
    steps = 0.0
    vm_start = None
    fetch = 0.0
    for ev in events:
        kind = ev["event"]
        if kind in ("stage_cached", "stage_started"):
            keys[ev["stage"]] = ev["key"]
        if kind == "stage_started":
            built.append(ev["stage"])
        elif kind == "qemu_started":
            vm_start, accel = ev["time"], ev["accel"]
        elif kind == "console" and vm_start is not None:
            m = CLOUD_INIT_DONE.search(ev["line"])
            if m:
                boots.append({"seconds": ev["time"] - vm_start, "guest_uptime": float(m.group(1))})
                vm_start = None
        elif kind == "cloud_init_done" and vm_start is not None:
            # no console line seen: strata's own measure of the same moment
            boots.append({"seconds": ev["seconds"], "guest_uptime": None})
            vm_start = None
        elif kind == "restore_resumed":
            restores.append(ev["seconds"])
            vm_start = None
        elif kind == "step_finished":
            steps += ev["seconds"]
        elif kind == "download_finished":
            fetch += ev["seconds"]
    boot = sum(b["seconds"] for b in boots)
    parts = overhead_parts(events, fetch)
    parts["other"] = max(0.0, wall - boot - steps - sum(parts.values()))
    layers = {}
    for stage in stages:
        d = store / "layers" / keys[stage]
        layers[stage] = {
            "path": str(d / "disk.qcow2"),
            "bytes": allocated(d / "disk.qcow2"),
            "restore_bytes": allocated(d / "restore") if (d / "restore").exists() else 0,
        }
    return {
        "wall": wall,
        "boot": boot,
        "steps": steps,
        "overhead": wall - boot - steps,
        "built": built,
        "boots": boots,
        "restores": restores,
        "fetch_seconds": fetch,
        "overhead_parts": parts,
        "accel": accel,
        "outputs": layers,
        "first_boot_bytes": allocated(store / "boots") if (store / "boots").exists() else 0,
        "logs": str(logs),
    }


# Where strata's overhead goes, from its events' timestamps (seconds, summed over stages).
OVERHEAD_PARTS = (
    ("fetch", "source fetch"),
    ("cloud_init_wait", "cloud-init's end to strata's noticing"),
    ("seal_and_cut", "sysprep, freeze, cut or power-off, check"),
    ("commit", "commit"),
    ("restore_save", "restore-point saves"),
    ("resume", "resumes"),
    ("other", "the rest (start, cache lookups, uploads' setup)"),
)


def overhead_parts(events: list[dict], fetch: float) -> dict:
    parts = {key: 0.0 for key, _ in OVERHEAD_PARTS if key != "other"}
    parts["fetch"] = fetch
    finished_line, sysprep_at = None, {}
    for ev in events:
        kind = ev["event"]
        if kind == "console" and CLOUD_INIT_DONE.search(ev["line"]):
            finished_line = ev["time"]
        elif kind == "cloud_init_done" and finished_line is not None:
            parts["cloud_init_wait"] += max(0.0, ev["time"] - finished_line)
            finished_line = None
        elif kind == "sysprep":
            sysprep_at[ev["stage"]] = ev["time"]
        elif kind == "committing" and ev["stage"] in sysprep_at:
            committing_at = ev["time"]
            parts["seal_and_cut"] += committing_at - sysprep_at.pop(ev["stage"])
            sysprep_at[ev["stage"] + "/committing"] = committing_at
        elif kind == "layer_committed" and ev["stage"] + "/committing" in sysprep_at:
            parts["commit"] += ev["time"] - sysprep_at.pop(ev["stage"] + "/committing")
        elif kind == "restore_saved":
            parts["restore_save"] += ev["seconds"]
        elif kind == "restore_resumed":
            parts["resume"] += ev["seconds"]
    return parts


# --- Packer ----------------------------------------------------------------------------------


class ConsoleWatcher(threading.Thread):
    """Timestamps the lines QEMU writes to a serial log file as they appear (polled)."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.lines: list[tuple[float, str]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        pending, pos = b"", 0
        while True:
            stopping = self.stop.is_set()
            try:
                with self.path.open("rb") as f:
                    f.seek(pos)
                    chunk = f.read()
                    pos += len(chunk)
            except FileNotFoundError:
                chunk = b""
            if chunk:
                now = time.time()
                pending += chunk
                *done, pending = pending.split(b"\n")
                for raw in done:
                    self.lines.append((now, raw.decode("utf-8", "replace").strip("\r")))
            if stopping:
                return
            self.stop.wait(0.1)


def packer_stage(ctx: dict, stage: str, source: Path, where: Path, template: Path | None = None) -> dict:
    seed_dir, out_dir = where / "seed", where / "output"
    seed_dir.mkdir(parents=True)
    hostname = f"demo-{stage}"
    seed_ctx = dict(ctx["seed"], hostname=hostname, stage=stage)
    (seed_dir / "user-data").write_text(render_seed(seed_ctx))
    instance = "packer-" + secrets.token_hex(8)
    (seed_dir / "meta-data").write_text(
        f"instance-id: {json.dumps(instance)}\nlocal-hostname: {json.dumps(hostname)}\n"
    )
    console = where / "console.log"
    variables = {
        "source": str(source),
        "output_dir": str(out_dir),
        "vm_name": f"{stage}.qcow2",
        "seed_dir": str(seed_dir),
        "console_log": str(console),
        "accel": ctx["accel"],
        "cpu": "host" if ctx["accel"] == "kvm" else "max",
        "cpus": str(ctx["cpus"]),
        "memory": str(ctx["memory_mib"]),
        "disk_size": f"{ctx['disk_mib']}M",
        "user": ctx["seed"]["user"],
        "ssh_key": str(ctx["client_key"]),
        "tree": str(ctx["tree"]),
        "bench_dir": str(BENCH),
        "app_port": str(ctx["seed"]["vars"].get("app_port", "8080")),
    }
    argv = ["packer", "build", "-color=false"]
    for k, v in variables.items():
        argv += ["-var", f"{k}={v}"]
    argv.append(str(template or BENCH / "packer" / f"{stage}.json"))
    env = dict(
        os.environ,
        PACKER_CACHE_DIR=str(ctx["packer_cache"]),
        PACKER_LOG="1",
        PACKER_LOG_PATH=str(where / "packer.log"),
        CHECKPOINT_DISABLE="1",
        # Packer 1.6.6 leaves its cd_files staging folder (the seed, with the host key) in
        # TMPDIR after every build: keep it in the work folder, which is deleted.
        TMPDIR=str(ctx["packer_tmp"]),
    )
    watcher = ConsoleWatcher(console)
    watcher.start()
    lines: list[tuple[float, str]] = []
    start_wall = time.time()
    start = time.monotonic()
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=where, text=True,
        start_new_session=True,
    )
    killer = threading.Timer(BUILD_DEADLINE, stop_group, [proc])
    killer.start()
    try:
        assert proc.stdout is not None
        with (where / "stdout.log").open("w") as keep:
            for line in proc.stdout:
                now = time.time()
                lines.append((now, line.rstrip("\n")))
                keep.write(f"{now:.3f} {line}")
                keep.flush()
        rc = proc.wait()
    finally:
        killer.cancel()
        if proc.poll() is None:
            stop_group(proc)
        watcher.stop.set()
        watcher.join()
    wall = time.monotonic() - start
    if rc != 0:
        tail = "\n".join(l for _, l in lines[-30:])
        raise BenchError(f"packer build of {stage} failed (exit {rc}); logs in {where}:\n{tail}")

    def first(pattern: str) -> float | None:
        return next((t for t, l in lines if re.search(pattern, l)), None)

    vm_start = first(r"==> qemu: Starting VM") or start_wall
    provisioners = [t for t, l in lines if re.match(r"==> qemu: (Provisioning with|Uploading )", l)]
    # [cloud-init wait, the stage's steps..., cleanup]
    if len(provisioners) < 3:
        raise BenchError(f"cannot find Packer's provisioners in {where / 'stdout.log'}")
    steps = provisioners[-1] - provisioners[1]
    done = [(t, CLOUD_INIT_DONE.search(l)) for t, l in watcher.lines]
    done = [(t, m) for t, m in done if m]
    if done:
        boot = {"seconds": done[0][0] - vm_start, "guest_uptime": float(done[0][1].group(1))}
    else:  # no console line: until the cloud-init wait provisioner returned
        boot = {"seconds": provisioners[1] - vm_start, "guest_uptime": None}
    output = out_dir / f"{stage}.qcow2"
    return {
        "wall": wall,
        "boot": boot,
        "steps": steps,
        "ssh_wait": (first(r"Connected to SSH") or vm_start) - (first(r"Waiting for SSH") or vm_start),
        "output": output,
    }


def packer_scenario(ctx: dict, scenario: str, where: Path, outputs: dict) -> dict:
    wall = boot = steps = 0.0
    boots, built = [], []
    for stage in PACKER_PLAN[scenario]:
        parent = BASE_IMAGE if stage == STAGES[0] else outputs[STAGES[STAGES.index(stage) - 1]]
        log(f"  packer: {stage} on {parent}")
        r = packer_stage(ctx, stage, parent, where / stage)
        outputs[stage] = r["output"]
        wall += r["wall"]
        boot += r["boot"]["seconds"]
        steps += r["steps"]
        boots.append(dict(r["boot"], ssh_wait=r["ssh_wait"]))
        built.append(stage)
    return {
        "wall": wall,
        "boot": boot,
        "steps": steps,
        "overhead": wall - boot - steps,
        "built": built,
        "boots": boots,
        "outputs": {
            s: {"path": str(outputs[s]), "bytes": allocated(outputs[s])} for s in STAGES
        },
        "logs": str(where),
    }


def packer_one_build(ctx: dict, where: Path) -> dict:
    """All three stages' steps in one Packer build on the base image: the three templates'
    provisioners merged (one cloud-init wait first, one cleanup last)."""
    templates = [json.loads((BENCH / "packer" / f"{stage}.json").read_text()) for stage in STAGES]
    merged = dict(templates[0])
    merged["_comment"] = "strata's demo, all three stages in one Packer 1.6.6 build (bench.py writes it)."
    steps = [p for t in templates for p in t["provisioners"][1:-1]]
    merged["provisioners"] = [templates[0]["provisioners"][0], *steps, templates[0]["provisioners"][-1]]
    where.mkdir(parents=True)
    template = where / "all.json"
    template.write_text(json.dumps(merged, indent=2))
    log(f"  packer, one build: all stages on {BASE_IMAGE}")
    r = packer_stage(ctx, "all", BASE_IMAGE, where / "build", template)
    return {
        "wall": r["wall"],
        "boot": r["boot"]["seconds"],
        "steps": r["steps"],
        "overhead": r["wall"] - r["boot"]["seconds"] - r["steps"],
        "bytes": allocated(r["output"]),
        "logs": str(where),
    }


OTHER_STAGE = "tools"


def other_definition(tree: Path) -> Path:
    """Another definition on the demo's source: its [source], [machine] and [communicator], its
    own name, and one first stage of its own."""
    text = (tree / "images" / "demo.toml").read_text()
    shared = text.split("[[stage]]", 1)[0].replace('name = "demo"', 'name = "other"', 1)
    path = tree / "images" / "other.toml"
    path.write_text(
        shared + f'[[stage]]\nname = "{OTHER_STAGE}"\n'
        'steps = [ { shell = "echo other > /etc/strata-other" } ]\n'
    )
    return path


# --- the bytes a stage changed: 4 KiB guest blocks of the top layer that differ from its parent


class Nbd:
    """A read-only qemu-nbd on a unix socket and a minimal client (fixed newstyle, EXPORT_NAME)."""

    def __init__(self, image: Path, sock: Path) -> None:
        self.proc = subprocess.Popen(
            ["qemu-nbd", "--read-only", "-k", str(sock), "--image-opts",
             f"driver=qcow2,read-only=on,force-share=on,file.driver=file,file.filename={image.resolve()}"],
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        self.s = socket.socket(socket.AF_UNIX)
        while True:
            try:
                self.s.connect(str(sock))
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise BenchError(f"qemu-nbd did not serve {image}")
                time.sleep(0.05)
        hello = self.recv(18)
        if hello[:8] != b"NBDMAGIC" or hello[8:16] != b"IHAVEOPT":
            raise BenchError("qemu-nbd spoke an unknown NBD handshake")
        flags = struct.unpack(">H", hello[16:])[0]
        no_zeroes = flags & 2
        self.s.sendall(struct.pack(">I", 1 | no_zeroes))
        self.s.sendall(b"IHAVEOPT" + struct.pack(">II", 1, 0))
        self.recv(8 + 2 + (0 if no_zeroes else 124))
        self.handle = 0

    def recv(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.s.recv(n - len(buf))
            if not chunk:
                raise BenchError("qemu-nbd closed the connection")
            buf += chunk
        return bytes(buf)

    def read(self, offset: int, length: int) -> bytes:
        self.handle += 1
        self.s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 0, self.handle, offset, length))
        magic, error, _ = struct.unpack(">IIQ", self.recv(16))
        if magic != 0x67446698 or error:
            raise BenchError(f"NBD read at {offset} failed (error {error})")
        return self.recv(length)

    def close(self) -> None:
        try:
            self.s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 2, 0, 0, 0))
        except OSError:
            pass
        self.s.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def changed_bytes(top: Path, parent: Path, tmp: Path) -> dict:
    extents = json.loads(run_quiet(["qemu-img", "map", "-U", "--output=json", str(top)]))
    own = [(e["start"], e["length"]) for e in extents if e["depth"] == 0 and e["data"]]
    a = Nbd(top, tmp / "top.sock")
    b = Nbd(parent, tmp / "parent.sock")
    changed = examined = 0
    try:
        for start, length in own:
            off = start
            while off < start + length:
                n = min(1 << 20, start + length - off)
                x, y = a.read(off, n), b.read(off, n)
                for i in range(0, n, 4096):
                    if x[i : i + 4096] != y[i : i + 4096]:
                        changed += min(4096, n - i)
                examined += n
                off += n
    finally:
        a.close()
        b.close()
    return {"changed_bytes": changed, "top_data_bytes": examined}


# --- export ------------------------------------------------------------------------------


def export_compare(strata: Path, store: Path, definition: Path, final_layer: Path, where: Path) -> dict:
    help_ok = subprocess.run([str(strata), "export", "--help"], capture_output=True).returncode == 0
    result: dict = {}
    if help_ok:
        out = where / "strata-export"
        out.mkdir(parents=True)
        argv = [str(strata), "--store", str(store), "--log-format", "json", "export",
                str(definition), "--format", "qcow2", "-o", str(out)]
        start = time.monotonic()
        done = subprocess.run(argv, capture_output=True, text=True)
        wall = time.monotonic() - start
        if done.returncode != 0:
            raise BenchError(f"strata export failed: {done.stderr[-2000:]}")
        images = sorted(out.glob("*.qcow2"))
        result["strata"] = {"wall": wall, "bytes": sum(allocated(p) for p in images),
                            "files": [p.name for p in sorted(out.iterdir())]}
    else:
        result["strata"] = None
    bare = where / "bare"
    bare.mkdir(parents=True)
    argv = ["qemu-img", "convert", *CONVERT_OPTIONS, str(final_layer), str(bare / "final.qcow2")]
    start = time.monotonic()
    run_quiet(argv)
    wall = time.monotonic() - start
    result["qemu_img_convert"] = {"wall": wall, "bytes": allocated(bare / "final.qcow2"),
                                  "argv": ["qemu-img", "convert", *CONVERT_OPTIONS, "FINAL", "OUT"]}
    return result


# --- reporting -------------------------------------------------------------------------------


def med(values: list[float]) -> float:
    return statistics.median(values)


def summarize(runs: list[dict]) -> dict:
    """runs: one measurement per run; medians (and min/max of wall)."""
    walls = [r["wall"] for r in runs]
    return {
        "wall_median": med(walls),
        "wall_min": min(walls),
        "wall_max": max(walls),
        "boot_median": med([r["boot"] for r in runs]),
        "steps_median": med([r["steps"] for r in runs]),
        "overhead_median": med([r["overhead"] for r in runs]),
        "stages_built": len(runs[-1]["built"]),
        "guest_boots": len(runs[-1]["boots"]),
        "guest_resumes": len(runs[-1].get("restores", [])),
        "stage_bytes_median": {
            s: int(med([r["outputs"][s]["bytes"] for r in runs])) for s in STAGES
        },
        "runs": runs,
    }


def median_run(runs: list[dict]) -> dict:
    """The run whose wall time is the median (the lower middle one for an even count)."""
    ordered = sorted(runs, key=lambda r: r["wall"])
    return ordered[(len(ordered) - 1) // 2]


def fmt_bytes(n: float) -> str:
    return f"{n / 1048576:.1f} MiB"


def table(result: dict) -> str:
    rows = [
        "| scenario | tool | stages built (guests) | wall s: median (min–max) | guest boot s | steps s "
        "| overhead s (per built stage) | bytes on disk: base / app-base / final |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for sid, name in SCENARIOS:
        for tool in ("strata", "packer"):
            s = result["scenarios"][sid][tool]
            built = s["stages_built"]
            per = f" ({s['overhead_median'] / built:.1f})" if built else ""
            how = [f"{s['guest_boots']} boot{'s' if s['guest_boots'] != 1 else ''}"] if s["guest_boots"] else []
            how += [f"{s['guest_resumes']} resumed"] if s["guest_resumes"] else []
            built_text = f"{built} ({', '.join(how)})" if how else str(built)
            sizes = " / ".join(fmt_bytes(s["stage_bytes_median"][st]) for st in STAGES)
            restore = med([sum(o.get("restore_bytes", 0) for o in r["outputs"].values()) for r in s["runs"]])
            if restore:
                sizes += f" (+ {fmt_bytes(restore)} of restore points)"
            first_boot = med([r.get("first_boot_bytes", 0) for r in s["runs"]])
            if tool == "strata" and sid == "a" and first_boot:
                sizes += f" (+ {fmt_bytes(first_boot)}: the source's first boot)"
            rows.append(
                f"| ({sid}) {name} | {tool} | {built_text} | {s['wall_median']:.1f} "
                f"({s['wall_min']:.1f}–{s['wall_max']:.1f}) | {s['boot_median']:.1f} "
                f"| {s['steps_median']:.1f} | {s['overhead_median']:.1f}{per} | {sizes} |"
            )
        one = result.get("packer_one_build")
        if sid == "a" and one:
            rows.append(
                f"| ({sid}) {name} | Packer, one build | 3 (1 boot) | {one['wall_median']:.1f} "
                f"({one['wall_min']:.1f}–{one['wall_max']:.1f}) | {one['boot_median']:.1f} "
                f"| {one['steps_median']:.1f} | {one['overhead_median']:.1f} "
                f"| {fmt_bytes(one['bytes_median'])} (one flat image) |"
            )
    other = result.get("other_definition")
    if other:
        how = f"{other['guest_boots']} boots, {other['guest_resumes']} resumed"
        rows += ["", "| another definition on the same source, its first layer (strata) | guests "
                 "| wall s: median (min–max) | steps s | layer bytes |", "|---|---|---|---|---|",
                 f"| after (a)–(d), a new definition with one first stage of its own | {how} "
                 f"| {other['wall_median']:.1f} ({other['wall_min']:.1f}–{other['wall_max']:.1f}) "
                 f"| {other['steps_median']:.1f} | {fmt_bytes(other['bytes_median'])} |"]
    ex = result["export"]
    rows += ["", "| export of final (qcow2, zstd) | wall s: median (min–max) | output bytes |", "|---|---|---|"]
    for key, label in (("strata", "`strata export`"), ("qemu_img_convert", "bare `qemu-img convert`")):
        e = ex.get(key)
        if e is None:
            rows.append(f"| {label} | not available in this strata | |")
        else:
            rows.append(f"| {label} | {e['wall_median']:.1f} ({e['wall_min']:.1f}–{e['wall_max']:.1f}) "
                        f"| {fmt_bytes(e['bytes_median'])} |")
    rows += ["", "| strata's overhead by part, s (median run) | "
             + " | ".join(f"({sid})" for sid, _ in SCENARIOS) + " |",
             "|---|" + "---|" * len(SCENARIOS)]
    for key, label in OVERHEAD_PARTS:
        cells = []
        for sid, _ in SCENARIOS:
            s = result["scenarios"][sid]["strata"]
            run = median_run(s["runs"])
            cells.append(f"{run.get('overhead_parts', {}).get(key, 0.0):.2f}")
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    rows += ["", "| final stage's layer (scenario c) | layer bytes on disk | guest blocks the stage changed | ratio |",
             "|---|---|---|---|"]
    for tool in ("strata", "packer"):
        f = result["final_layer"][tool]
        rows.append(f"| {tool} | {fmt_bytes(f['layer_bytes'])} | {fmt_bytes(f['changed_bytes'])} "
                    f"| {f['ratio']:.1f}x |")
    rows += ["", "| target (reported, not asserted) | measured | met |", "|---|---|---|"]
    for t in result["targets"]:
        rows.append(f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else 'no'} |")
    return "\n".join(rows)


def targets(result: dict) -> list[dict]:
    sc = result["scenarios"]
    s = {k: sc[k]["strata"] for k in sc}
    p = {k: sc[k]["packer"] for k in sc}
    out = [
        {"target": "(b) strata under 1 s", "measured": f"{s['b']['wall_median']:.2f} s",
         "met": s["b"]["wall_median"] < 1},
        {"target": "(c) strata under 40% of Packer's wall",
         "measured": f"{100 * s['c']['wall_median'] / p['c']['wall_median']:.0f}%",
         "met": s["c"]["wall_median"] < 0.4 * p["c"]["wall_median"]},
        {"target": "(a) strata no slower than Packer",
         "measured": f"{s['a']['wall_median']:.0f} s vs {p['a']['wall_median']:.0f} s",
         "met": s["a"]["wall_median"] <= p["a"]["wall_median"]},
    ]
    worst = max(
        (s[k]["overhead_median"] / s[k]["stages_built"] for k in ("a", "c", "d") if s[k]["stages_built"]),
    )
    out.append({"target": "strata overhead under 2 s per built stage (worst of a, c, d)",
                "measured": f"{worst:.1f} s", "met": worst < 2})
    one = result.get("packer_one_build")
    if one:
        out.append({"target": "(a) strata no slower than Packer's one build of all stages",
                    "measured": f"{s['a']['wall_median']:.0f} s vs {one['wall_median']:.0f} s",
                    "met": s["a"]["wall_median"] <= one["wall_median"]})
    out.append({"target": "(d) strata rebuilds all three stages with no boot, in at most half its (a)",
                "measured": f"{s['d']['wall_median']:.0f} s vs {s['a']['wall_median']:.0f} s "
                            f"({100 * s['d']['wall_median'] / s['a']['wall_median']:.0f}%), "
                            f"{s['d']['guest_boots']} boots",
                "met": s["d"]["guest_boots"] == 0 and s["d"]["wall_median"] <= 0.5 * s["a"]["wall_median"]})
    other = result.get("other_definition")
    if other:
        out.append({"target": "another definition on the same source: its first layer with no boot",
                    "measured": f"{other['guest_boots']} boots, {other['wall_median']:.1f} s",
                    "met": other["guest_boots"] == 0})
    f = result["final_layer"]["strata"]
    out.append({"target": "strata's final layer under 2x the bytes the stage changed",
                "measured": f"{f['ratio']:.1f}x", "met": f["ratio"] < 2})
    return out


NOTES = [
    "Packer gets stages the way a Packer user does: one build per stage, each on the previous "
    "build's output (disk_image, use_backing_file), rebuilding from the changed stage up. It "
    "has no cache, so for (b) it rebuilds all three stages (it cannot know nothing changed); "
    "(c) rebuilds final only, on the previous app-base output; (d) rebuilds all three. "
    "\"Packer, one build\" in (a) is what a Packer user without layers runs: the three "
    "templates' steps in one build on the base image (one boot, one flat output image); that "
    "user reruns it whole for (b), (c) and (d).",
    "strata's (a) saves the source's first boot (the guest ready for base's steps) in its store; "
    "(d) and the other definition resume it instead of booting, as a later build on that "
    "source does. Its disk cost is shown in (a)'s bytes.",
    "Both tools run the same scripts on the same base image with the same seed (strata's "
    "seeds/default.yaml.j2 rendered for Packer with a fixed bench key and host key, on a cd_files "
    "CD labelled cidata), accelerator and CPU model, cpus, memory, and disk options "
    "(cache=unsafe, discard/detect-zeroes=unmap). Machine type: strata q35, Packer pc (its "
    "default; Debian's cloud kernel has no AHCI driver, so a q35 guest cannot see Packer's seed "
    "CD). Packer also waits for cloud-init first and ends each stage "
    "with strata's sysprep (bench/packer/cleanup.sh). Packer has no virtio-rng (any -device in "
    "qemuargs would replace its NIC).",
    "Guest boot: VM start to cloud-init's 'finished' line on the serial console (host "
    "timestamps); 0 for a stage that goes on in a running or resumed guest. Steps: strata's "
    "step_finished seconds; Packer from the first step provisioner's start to the cleanup "
    "provisioner's start. Overhead = wall - boot - steps (strata: fetch, cache lookups, sysprep, "
    "live cuts, restore save/resume, power-off, commit; Packer: SSH polling, cloud-init wait "
    "after boot, uploads, cleanup, halt). strata's wall for (a) includes fetching the source "
    "into its fresh store.",
    "Bytes on disk: allocated bytes of each stage's output (strata: layers/KEY/disk.qcow2; "
    "Packer: its output qcow2). strata's restore points (a saved running guest, kept so the "
    "stage above can resume instead of booting; never exported) are on disk too: shown in "
    "parentheses, per layer in the JSON as restore_bytes.",
    "Bytes the final stage changed: 4 KiB guest blocks in the final layer's own clusters "
    "whose content differs from the same blocks of its parent (read through qemu-nbd).",
]


def main() -> int:
    runs_wanted = int(os.environ.get("BENCH_RUNS", "1"))
    strata = Path(os.environ.get("STRATA", REPO / "target" / "release" / "strata")).resolve()
    stamp = time.strftime("%Y%m%dT%H%M%S")
    work = Path(os.environ.get("BENCH_WORK") or f"/var/tmp/strata-bench-{stamp}")
    work.mkdir(parents=True, exist_ok=True)
    for tool in ("packer", "qemu-img", "qemu-nbd", "xorriso", "ssh-keygen"):
        if shutil.which(tool) is None:
            raise BenchError(f"{tool} is not installed: run bench/run.sh, which installs it")
    if not strata.exists():
        raise BenchError(f"{strata} does not exist: run `cargo build --release` (bench/run.sh does)")
    if not BASE_IMAGE.exists():
        raise BenchError(f"{BASE_IMAGE} does not exist: run scripts/build-base-image.sh")
    demo = tomllib.loads(DEMO.read_text())
    names = [s["name"] for s in demo["stage"]]
    if names != STAGES:
        raise BenchError(f"{DEMO} has stages {names}; bench/packer/ has templates for {STAGES}")

    (work / "tmp").mkdir(exist_ok=True)
    keys = work / "keys"
    keys.mkdir(exist_ok=True)
    for k in ("client", "host"):
        if not (keys / k).exists():
            run_quiet(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"strata-bench-{k}", "-f", str(keys / k)])
    user = demo.get("communicator", {}).get("user", "strata")
    machine = demo.get("machine", {})
    ctx = {
        "cpus": machine.get("cpus", 2),
        "memory_mib": size_mib(machine.get("memory", "2G")),
        "disk_mib": size_mib(machine.get("disk_size", "4G")),
        "client_key": keys / "client",
        "packer_cache": work / "packer-cache",
        "packer_tmp": work / "tmp",
        "seed": {
            "user": user,
            "ssh_authorized_key": (keys / "client.pub").read_text().strip(),
            "host_key_private": (keys / "host").read_text().strip(),
            "host_key_public": (keys / "host.pub").read_text().strip(),
            "image": demo.get("name", "demo"),
            "vars": demo.get("vars", {}),
        },
    }
    sampler = LoadSampler()
    sampler.start()
    load_start = loadavg()
    started = datetime.datetime.now(datetime.timezone.utc)
    per: dict = {sid: {"strata": [], "packer": []} for sid, _ in SCENARIOS}
    one_build: list[dict] = []
    others: list[dict] = []
    exports: dict = {"strata": [], "qemu_img_convert": []}
    final_layers: dict = {"strata": [], "packer": []}
    accel = None
    for run in range(1, runs_wanted + 1):
        rdir = work / f"run{run}"
        if rdir.exists():
            shutil.rmtree(rdir)
        definition = make_tree(rdir / "tree")
        ctx["tree"] = rdir / "tree"
        store = rdir / "strata-store"
        packer_outputs: dict = {}
        for sid, name in SCENARIOS:
            changed = apply_change(rdir / "tree", sid, run)
            log(f"run {run}/{runs_wanted}, ({sid}) {name}" + (f": changed {changed}" if changed else ""))
            sdir = rdir / sid
            (sdir / "strata").mkdir(parents=True)
            s = strata_build(strata, store, definition, sdir / "strata")
            accel = accel or s["accel"]
            ctx["accel"] = accel or "tcg"
            log(f"  strata: {s['wall']:.1f} s, built {s['built'] or 'nothing'}")
            p = packer_scenario(ctx, sid, sdir / "packer", packer_outputs)
            log(f"  packer: {p['wall']:.1f} s, built {p['built']}")
            per[sid]["strata"].append(s)
            per[sid]["packer"].append(p)
            if sid == "a":
                one = packer_one_build(ctx, sdir / "packer-one-build")
                log(f"  packer, one build: {one['wall']:.1f} s")
                one_build.append(one)
            if sid == "c":
                for tool, r in (("strata", s), ("packer", p)):
                    top = Path(r["outputs"]["final"]["path"])
                    parent = Path(r["outputs"]["app-base"]["path"])
                    d = changed_bytes(top, parent, sdir)
                    d["layer_bytes"] = r["outputs"]["final"]["bytes"]
                    final_layers[tool].append(d)
        log(f"run {run}: another definition on the same source")
        (rdir / "other").mkdir()
        o = strata_build(strata, store, other_definition(rdir / "tree"), rdir / "other", [OTHER_STAGE])
        log(f"  strata: {o['wall']:.1f} s, {len(o['boots'])} boots, {len(o['restores'])} resumed")
        others.append(o)
        log(f"run {run}: export")
        final = Path(per["d"]["strata"][-1]["outputs"]["final"]["path"])
        e = export_compare(strata, store, definition, final, rdir / "export")
        for k in exports:
            if e.get(k) is not None:
                exports[k].append(e[k])
    sampler.stop.set()

    result: dict = {
        "date": started.isoformat(timespec="seconds"),
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "runs": runs_wanted,
        "machine": {
            "cores": os.cpu_count(),
            "cpu": next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                         if l.startswith("model name")), platform.processor()),
            "accel": accel,
            "kernel": platform.release(),
            "load_average_start": load_start,
            "load_average_end": loadavg(),
            "load_average_1min_mean": round(statistics.mean(sampler.samples), 2) if sampler.samples else None,
            "load_average_1min_max": max(sampler.samples) if sampler.samples else None,
        },
        "versions": {
            "strata": run_quiet([str(strata), "--version"]).strip(),
            "strata_commit": subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                                            capture_output=True, text=True).stdout.strip(),
            "packer": run_quiet(["packer", "version"]).splitlines()[0].strip(),
            "qemu": run_quiet(["qemu-system-x86_64", "--version"]).splitlines()[0].strip(),
        },
        "scenarios": {
            sid: {"name": name, "strata": summarize(per[sid]["strata"]), "packer": summarize(per[sid]["packer"])}
            for sid, name in SCENARIOS
        },
        "export": {
            k: (None if not v else {
                "wall_median": med([x["wall"] for x in v]), "wall_min": min(x["wall"] for x in v),
                "wall_max": max(x["wall"] for x in v), "bytes_median": int(med([x["bytes"] for x in v])),
                "runs": v})
            for k, v in exports.items()
        },
        "final_layer": {},
        "packer_one_build": {
            "wall_median": med([x["wall"] for x in one_build]),
            "wall_min": min(x["wall"] for x in one_build),
            "wall_max": max(x["wall"] for x in one_build),
            "boot_median": med([x["boot"] for x in one_build]),
            "steps_median": med([x["steps"] for x in one_build]),
            "overhead_median": med([x["overhead"] for x in one_build]),
            "bytes_median": int(med([x["bytes"] for x in one_build])),
            "runs": one_build,
        },
        "other_definition": {
            "wall_median": med([x["wall"] for x in others]),
            "wall_min": min(x["wall"] for x in others),
            "wall_max": max(x["wall"] for x in others),
            "guest_boots": max(len(x["boots"]) for x in others),
            "guest_resumes": min(len(x["restores"]) for x in others),
            "steps_median": med([x["steps"] for x in others]),
            "bytes_median": int(med([x["outputs"][OTHER_STAGE]["bytes"] for x in others])),
            "runs": others,
        },
        "notes": NOTES,
    }
    for tool, v in final_layers.items():
        layer = med([x["layer_bytes"] for x in v])
        changed = med([x["changed_bytes"] for x in v])
        result["final_layer"][tool] = {
            "scenario": "c", "layer_bytes": layer, "changed_bytes": changed,
            "ratio": layer / changed if changed else float("inf"), "runs": v,
            "method": NOTES[-1],
        }
    result["targets"] = targets(result)
    text = render(result)
    results = BENCH / "results"
    results.mkdir(exist_ok=True)
    data = json.dumps(result, indent=2, default=str) + "\n"
    for name, content in ((f"{stamp}.json", data), ("latest.json", data), (f"{stamp}.md", text), ("latest.md", text)):
        tmp = results / f".{name}.tmp"
        tmp.write_text(content)
        os.replace(tmp, results / name)
    print(text)
    log(f"written: {results / 'latest.json'}, {results / 'latest.md'} (and {stamp}.*)")
    if os.environ.get("BENCH_KEEP") != "1":
        shutil.rmtree(work, ignore_errors=True)
    else:
        log(f"kept: {work}")
    return 0


def render(result: dict) -> str:
    """The Markdown report of a result: a header with date and machine, the tables, the notes."""
    md = table(result)
    m = result["machine"]
    runs_wanted = result["runs"]
    header = (
        f"{result['date'][:10]}, {m['cores']} cores ({m['cpu']}), accelerator {m['accel']}, "
        f"{runs_wanted} run(s) per scenario, load average {m['load_average_start'][0]:.1f} at start, "
        f"{m['load_average_1min_mean']} mean, {m['load_average_1min_max']} max; "
        f"{result['versions']['strata']} ({result['versions']['strata_commit']}), "
        f"{result['versions']['packer']}, {result['versions']['qemu']}."
    )
    return header + "\n\n" + md + "\n\n" + "\n".join(f"- {n}" for n in result["notes"]) + "\n"


if __name__ == "__main__":
    try:
        if sys.argv[1:2] == ["--render"] and len(sys.argv) == 3:
            # python3 bench/bench.py --render results/X.json: print X's Markdown report again
            print(render(json.loads(Path(sys.argv[2]).read_text())), end="")
            sys.exit(0)
        sys.exit(main())
    except BenchError as err:
        print(f"bench: {err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        sys.exit(130)
