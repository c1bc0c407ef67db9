#!/usr/bin/python3
"""make test-wan: the federation over emulated WAN links (issue 14, item 2).

The coordinator runs in one network namespace, each of six sites in its own,
joined to the coordinator's by a veth pair. This kernel has no netem, so:
  bandwidth   htb on both ends of a site's veth (one class, pfifo of 100)
  loss        a classic-BPF filter on that htb that drops a packet with
              probability p (SKF_AD_RANDOM; cls_bpf is built in, gact is not),
              one TCP segment per packet (gso_max_segs 1)
  latency     tests/wan/relay.c in the site's namespace: the site's daemon
              connects to 127.0.0.1:7700 there, the relay holds each chunk for
              the one-way delay + jitter, in order, then forwards it over the veth
  loss's cost the kernel's drops are recovered at the veth's ~0.1 ms round trip,
              so the relay also holds a chunk one 40 ms round trip (one in five:
              200 ms, an RTO) with the same per-segment probability
  stalls      the relay's random pauses; resets: SIGUSR1 to a relay
  flaps       `ip link set wanK down/up` on the coordinator's end: the site's
              end loses carrier, its packets vanish (no error comes back)
What is not emulated: a real 40 ms path also slows TCP's window growth and its
recovery from loss (cwnd halving); here TCP runs at the veth's round trip, so
a lossy 100 Mbit/s link still moves close to 100 Mbit/s. Nor a shared uplink at
the coordinator: each site's veth has its own rate, the coordinator's end adds
them up. And a site's failing connect: the relay accepts on the site's side
first, then resets when the coordinator cannot be reached, so ZeroMQ retries
at its base interval (1 s) where a real refused or timed-out connect would back
off up to reconnect_max.

Profiles (6 sites, the cnn model, 100 PneumoniaMNIST training images each,
secure aggregation and CURVE on, the product's default timeouts):
  loopback      every process in one namespace on 127.0.0.1: the baseline
  hospital-vpn  every site: 40 ms RTT (+-2 ms jitter), 100 Mbit/s, 0.5% loss,
                a 50-300 ms stall every ~20 s per direction
  slow-site     the VPN, and site-05 at 10 Mbit/s with 200 ms RTT
  flapping      the VPN; site-02's link goes down three times at random moments
                for 5-12, 15-30 and 40-60 s (in random order), and its relay
                resets the connection mid-stream twice
  partition     the VPN; site-04 and site-05 (a third) are cut off at a random
                moment of round 2 for 45 s
And a site whose link moves one message for longer than a liveness timeout,
which must stay in the round all the same (both sides judge liveness by bytes
arriving, not by whole messages):
  thin-uplink   the VPN, and site-05 at 0.7 Mbit/s up (10 down, 200 ms RTT): its
                3.1 MB masked upload takes ~36 s, past heartbeat_timeout (30 s)
  thin-downlink the VPN, and site-05 at 0.7 Mbit/s down (10 up, 200 ms RTT): the
                6.6 MB model takes ~75 s, past the client's link_timeout (60 s)
  thin-downlink-reset  the same, and site-05's connection reset once 3 MB of the
                model are down it: it must resume the fetch where it stopped
                (protocol v4) and stay in the round
Each asserts: every round completes (none aborted) with every site that could
take part, the unmasked sum of every round is exactly the sum of the included
sites' encoded updates (the test build's MEDFED_TEST_DUMP_DIR), no site hangs
(a cut-off site comes back into a later round; at the end every daemon leaves:
on SHUTDOWN, or on SIGTERM where the run is steered through the admin socket),
and the run finishes within its deadline. Round times (median, rounds 2..),
split into the round's parts from the coordinator's log, go to stdout and
--out (JSON) for every profile; loopback, hospital-vpn and slow-site are the
comparison the issue asks for.

usage: run.py --bin BIN --hooks-bin HBIN --relay RELAY --out FILE
WAN_ONLY="loopback hospital-vpn ..." runs only those; WAN_SEED=N draws other
moments for the flaps, cuts and stalls (default 11; each run prints it); WAN_KEEP=1
keeps the work directory (it is kept anyway when a profile failed);
WAN_COORD_ARGS="--download-slots 6 ..." adds coordinator options (to measure a
setting). Needs root.
"""
import argparse
import gzip
import json
import os
import random
import re
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))
import exact_sum  # noqa: E402

SITES = 6
TRAIN_PER_SITE = 100
VAL_PER_SITE = 20
PORT = 7700
ADMIN_PORT = 7701
SEED = 11  # data, model and training: the same federation every run
# The moments, durations and order of flaps, cuts, stalls and resets:
# WAN_SEED=N replays a run (each run prints its seed).
WAN_SEED = int(os.environ.get("WAN_SEED", "11"))
SUBNET = "10.201"

VPN = {"down_mbit": 100, "up_mbit": 100, "rtt_ms": 40, "jitter_ms": 2, "loss": 0.005, "pause": "20:50:300"}
SLOW = {"down_mbit": 10, "up_mbit": 10, "rtt_ms": 200, "jitter_ms": 10, "loss": 0.0, "pause": None}
# A site whose link moves the cnn's 3.1 MB masked upload, or its 6.6 MB
# model, in longer than a fixed liveness timeout (the coordinator's
# heartbeat_timeout, 30 s; the client's link_timeout, 60 s): both sides count
# bytes arriving as life, not only whole messages.
THIN_UP = dict(SLOW, up_mbit=0.7)
THIN_DOWN = dict(SLOW, down_mbit=0.7)


class ProfileFailed(Exception):
    pass


def log(msg):
    print("wan: " + msg, flush=True)


def sh(*cmd, check=True):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if check and r.returncode != 0:
        raise RuntimeError("%s: exit %d: %s" % (" ".join(cmd), r.returncode, r.stdout.strip()))
    return r


def pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


# ---- network ------------------------------------------------------------------------

def loss_bytecode(p):
    """Classic BPF for cls_bpf in direct-action mode: A = random u32; below
    p * 2^32 return TC_ACT_SHOT (2), else TC_ACT_UNSPEC (-1: htb's default class)."""
    k = int(p * 2 ** 32)
    return "4,32 0 0 %d,53 1 0 %d,6 0 0 2,6 0 0 %d" % (2 ** 32 - 4096 + 56, k, 2 ** 32 - 1)


class Net:
    """The namespaces and veth pairs of one profile; close() removes them all,
    with whatever still runs inside (only this test's processes live there)."""

    def __init__(self, tag):
        self.tag = tag
        self.made = []

    def add_ns(self, name):
        ns = "%s-%s" % (self.tag, name)
        sh("ip", "netns", "add", ns)
        self.made.append(ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        return ns

    def veth(self, cns, sns, k):
        sh("ip", "link", "add", "wan%d" % k, "netns", cns, "type", "veth", "peer", "name", "wan0",
           "netns", sns)
        for ns, dev, addr in ((cns, "wan%d" % k, "%s.%d.1/24" % (SUBNET, k)),
                              (sns, "wan0", "%s.%d.2/24" % (SUBNET, k))):
            sh("ip", "-n", ns, "addr", "add", addr, "dev", dev)
            # One segment per packet: the loss filter drops segments, not 64 KB GSO bursts.
            sh("ip", "-n", ns, "link", "set", dev, "gso_max_size", "1500", "gso_max_segs", "1", "up")

    def shape(self, ns, dev, mbit, loss):
        sh("tc", "-n", ns, "qdisc", "replace", "dev", dev, "root", "handle", "1:", "htb", "default", "10")
        sh("tc", "-n", ns, "class", "add", "dev", dev, "parent", "1:", "classid", "1:10", "htb",
           "rate", "%gkbit" % (mbit * 1000), "ceil", "%gkbit" % (mbit * 1000), "quantum", "1514")
        sh("tc", "-n", ns, "qdisc", "add", "dev", dev, "parent", "1:10", "handle", "10:", "pfifo",
           "limit", "100")
        if loss:
            sh("tc", "-n", ns, "filter", "add", "dev", dev, "parent", "1:", "bpf", "bytecode",
               loss_bytecode(loss), "da")

    def drops(self, ns, dev):
        out = sh("tc", "-n", ns, "-s", "qdisc", "show", "dev", dev, check=False).stdout
        m = re.search(r"qdisc htb 1: .*?Sent (\d+) bytes (\d+) pkt \(dropped (\d+)", out, re.S)
        return {"bytes": int(m.group(1)), "packets": int(m.group(2)), "dropped": int(m.group(3))} if m else None

    def close(self):
        for ns in self.made:
            pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
            for p in pids:
                try:
                    os.kill(int(p), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            for _ in range(50):
                if sh("ip", "netns", "del", ns, check=False).returncode == 0:
                    break
                time.sleep(0.1)
        self.made = []


def clean_stale():
    """Namespaces a killed earlier run of this test left (mfwan-PID-*, PID gone)."""
    out = sh("ip", "netns", "list", check=False).stdout
    for line in out.splitlines():
        m = re.match(r"(mfwan-(\d+)-\S+)", line)
        if m and not pid_alive(int(m.group(2))):
            n = Net("")
            n.made = [m.group(1)]
            n.close()
            log("removed %s, left by an earlier run" % m.group(1))


# ---- the federation's files -----------------------------------------------------------

def read_idx(images, labels, n):
    raw, lab = gzip.open(images).read(), gzip.open(labels).read()
    magic, count, rows, cols = struct.unpack(">IIII", raw[:16])
    assert magic == 0x803 and count >= n, images
    size = rows * cols
    return [raw[16 + size * i:16 + size * (i + 1)] for i in range(n)], list(lab[8:8 + n]), rows, cols


def write_idx(images, labels, imgs, labs, rows, cols):
    with gzip.open(images, "wb", compresslevel=1) as f:
        f.write(struct.pack(">IIII", 0x803, len(imgs), rows, cols) + b"".join(imgs))
    with gzip.open(labels, "wb", compresslevel=1) as f:
        f.write(struct.pack(">II", 0x801, len(labs)) + bytes(labs))


def read_new(path, pos):
    """The whole lines appended to path since byte pos, and the new pos."""
    try:
        with open(path, "rb") as f:
            f.seek(pos)
            data = f.read()
    except FileNotFoundError:
        return [], pos
    end = data.rfind(b"\n") + 1
    return data[:end].decode(errors="replace").splitlines(), pos + end


def site_name(k):
    return "site-%02d" % k


class Kit:
    """Made once: each site's data slice (round robin over the first images),
    the federation's keys and configs (medfed provision), the initial model."""

    def __init__(self, work, bin_dir, hbin):
        self.work, self.bin, self.hbin = work, bin_dir, hbin
        src = os.path.join(ROOT, "data", "pneumoniamnist")
        for split, per in (("train", TRAIN_PER_SITE), ("val", VAL_PER_SITE)):
            imgs, labs, rows, cols = read_idx("%s/%s-images-idx3-ubyte.gz" % (src, split),
                                              "%s/%s-labels-idx1-ubyte.gz" % (src, split), per * SITES)
            for k in range(SITES):
                d = os.path.join(work, "data", site_name(k))
                os.makedirs(d, exist_ok=True)
                write_idx("%s/%s-images-idx3-ubyte.gz" % (d, split), "%s/%s-labels-idx1-ubyte.gz" % (d, split),
                          imgs[k::SITES], labs[k::SITES], rows, cols)
        with open(os.path.join(work, "sites.txt"), "w") as f:
            f.write("".join(site_name(k) + "\n" for k in range(SITES)))
        self.fed = os.path.join(work, "fed")
        # Each site reaches the coordinator at 127.0.0.1:7700 in its own
        # namespace: the relay there, or the coordinator itself (loopback).
        sh(os.path.join(bin_dir, "medfed"), "provision", "--roster", os.path.join(work, "sites.txt"),
           "--out", self.fed, "--federation", "wan", "--endpoint", "tcp://127.0.0.1:%d" % PORT,
           "--admin-endpoint", "tcp://127.0.0.1:%d" % ADMIN_PORT)
        self.init = os.path.join(work, "init.safetensors")
        sh(os.path.join(bin_dir, "medfed-init"), "--arch", "cnn", "--in-channels", "1", "--size", "28x28",
           "--classes", "2", "--seed", str(SEED), "--out", self.init)

    def client_ini(self, pdir, k):
        """The kit's client.ini, one LibTorch thread, the site's own state dir and data."""
        name = site_name(k)
        text = open(os.path.join(self.fed, "sites", name, "client.ini")).read()
        text = re.sub(r"(?m)^threads = \d+$", "threads = 1", text)
        sdir = os.path.join(pdir, "sites", name)
        os.makedirs(sdir, exist_ok=True)
        d = os.path.join(self.work, "data", name)
        text += "\n[client]\nstate_dir = %s\n\n[data]\nsource = idx\n" % sdir
        for split in ("train", "val"):
            text += "%s_images = %s/%s-images-idx3-ubyte.gz\n%s_labels = %s/%s-labels-idx1-ubyte.gz\n" % (
                split, d, split, split, d, split)
        path = os.path.join(pdir, name + ".ini")
        with open(path, "w") as f:
            f.write(text)
        return path


# ---- one run of the federation ----------------------------------------------------------

class Federation:
    """The coordinator, the relays and the six daemons of one profile, and
    what the test reads while they run: the coordinator's log (round starts,
    phases), metrics.jsonl (each finished round: its exact sum is checked at
    once, then its dumps are deleted)."""

    def __init__(self, h, name, net, coord_ns, site_ns, admin):
        self.h, self.name, self.net = h, name, net
        self.coord_ns, self.site_ns, self.admin = coord_ns, site_ns, admin
        self.dir = os.path.join(h.work, name)
        self.logs = os.path.join(self.dir, "logs")
        self.dump = os.path.join(self.dir, "dump")
        self.state = os.path.join(self.dir, "state")
        for d in (self.logs, self.dump):
            os.makedirs(d, exist_ok=True)
        self.procs = []
        self.coord = None
        self.clients = {}
        self.relays = {}
        self.rows = []
        self.sum_errors = []
        self.sums_checked = 0
        self.starts = []          # (t, round, cohort) from "plan-sent"
        self.phase = "waiting"
        self.round = 0
        self.events = []
        self.target = 0
        self.log_pos = 0
        self.log_text = ""
        self.metrics_pos = 0
        self.finishing = False
        self.t0 = time.time()

    # processes
    def spawn(self, ns, cmd, logname, env=None):
        with open(os.path.join(self.logs, logname), "ab") as f:
            p = subprocess.Popen(["ip", "netns", "exec", ns] + cmd, stdout=f, stderr=subprocess.STDOUT,
                                 env=env, start_new_session=True)
        self.procs.append(p)
        return p

    def start(self, rounds, coord_bind, relay_args=None):
        env = dict(os.environ, MEDFED_TEST_DUMP_DIR=self.dump)
        fed = self.h.kit.fed
        cmd = [os.path.join(self.h.hbin, "medfed-coordinator"),
               "--config", os.path.join(fed, "coordinator", "coordinator.ini"),
               "--bind", coord_bind, "--state-dir", self.state, "--resume", "off",
               "--init", self.h.kit.init, "--rounds", str(rounds), "--wait-for", str(SITES),
               "--local-epochs", "1", "--seed", str(SEED), "--wait-timeout", "120"]
        cmd += os.environ.get("WAN_COORD_ARGS", "").split()
        if self.admin:
            cmd += ["--admin-bind", "tcp://127.0.0.1:%d" % ADMIN_PORT, "--autostart", "on"]
        else:
            cmd += ["--admin-bind", ""]
        self.target = rounds
        self.t0 = time.time()
        self.coord = self.spawn(self.coord_ns, cmd, "coordinator.log", env)
        for k in range(SITES):
            if relay_args is not None:
                self.relays[k] = self.spawn(
                    self.site_ns[k],
                    [self.h.relay, "--listen", "127.0.0.1:%d" % PORT,
                     "--connect", "%s.%d.1:%d" % (SUBNET, k, PORT), "--seed", str(WAN_SEED * 100 + k)]
                    + relay_args(k), "relay-%s.log" % site_name(k))
        time.sleep(0.3)
        for k in range(SITES):
            ini = self.h.kit.client_ini(self.dir, k)
            self.clients[k] = self.spawn(self.site_ns[k], [os.path.join(self.h.hbin, "medfed-client"),
                                                           "--config", ini], site_name(k) + ".log", env)

    def admin_cmd(self, *args):
        r = sh("ip", "netns", "exec", self.coord_ns, os.path.join(self.h.bin, "medfed"), *args,
               "--config", os.path.join(self.h.kit.fed, "admin", "admin.ini"), check=False)
        try:
            return json.loads(r.stdout) if r.returncode == 0 else None
        except ValueError:
            return None

    # what the test watches
    def tick(self):
        lines, self.log_pos = read_new(os.path.join(self.logs, "coordinator.log"), self.log_pos)
        for line in lines:
            self.log_text += line + "\n"
            m = re.search(r"round=(\d+) phase=train event=plan-sent cohort=(\d+)", line)
            if m:
                self.starts.append((time.time(), int(m.group(1)), int(m.group(2))))
            m = re.search(r"round=(\d+) phase=(\w+) .*-> (\w+)", line)
            if m:
                self.round, self.phase = int(m.group(1)), m.group(3)
        lines, self.metrics_pos = read_new(os.path.join(self.state, "metrics.jsonl"), self.metrics_pos)
        for line in lines:
            if line.strip():
                self.on_row(json.loads(line))
        if self.admin and not self.finishing and self.coord.poll() is None:
            if len(self.rows) >= self.target - 1:  # a round queued: rounds go on until the driver is done
                st = self.admin_cmd("start", "--rounds", "2")
                if st:
                    self.target = st["target"]

    def on_row(self, row):
        self.rows.append(row)
        r = row["round"]
        if row.get("secagg") and not row.get("aborted"):
            why = exact_sum.check_row(row, self.dump, self.log_text)
            self.sums_checked += 1
            if why:
                self.sum_errors.append(why)
        for f in os.listdir(self.dump):
            if f.endswith("-r%d.bin" % r):
                os.unlink(os.path.join(self.dump, f))

    def sleep(self, s):
        end = time.time() + s
        while time.time() < end:
            self.tick()
            self.check_alive()
            time.sleep(min(0.1, max(0, end - time.time())))

    def check_alive(self):
        if self.coord.poll() is not None and not self.finishing:
            raise ProfileFailed("the coordinator exited (status %d) before the test was done; %s"
                                % (self.coord.returncode, self.tail("coordinator.log")))

    def wait(self, pred, timeout, what):
        end = time.time() + timeout
        while time.time() < end:
            self.tick()
            if pred():
                return
            self.check_alive()
            time.sleep(0.1)
        raise ProfileFailed("%s: not within %.0f s (round %d, phase %s); %s"
                            % (what, timeout, self.round, self.phase, self.tail("coordinator.log")))

    def tail(self, logname, n=6):
        try:
            lines = open(os.path.join(self.logs, logname), errors="replace").read().splitlines()
        except OSError:
            return ""
        return "last lines of %s:\n      %s" % (logname, "\n      ".join(lines[-n:]))

    def now(self):
        return time.time() - self.t0

    def next_full_round(self, after):
        """Waits for a round that starts after time `after` with every site in its cohort."""
        self.wait(lambda: any(t > after and c == SITES for t, _, c in self.starts), 240,
                  "a round with all %d sites after t=%.0f s" % (SITES, after - self.t0))
        return next(r for t, r, c in self.starts if t > after and c == SITES)

    def typical_round(self):
        """How long an undisturbed round has taken here (the shortest so far), 5 s before any."""
        return min([r["seconds"] for r in self.rows] or [5.0])

    def round_done(self, r):
        return any(row["round"] == r for row in self.rows)

    # the end of the run
    def finish_shutdown(self, deadline, check_clients=True):
        """No admin socket: the coordinator runs its rounds, says SHUTDOWN, exits;
        so does every daemon (check_clients; else call expect_clients_exit)."""
        self.finishing = True
        end = self.t0 + deadline
        while self.coord.poll() is None:
            if time.time() > end:
                raise ProfileFailed("the run did not finish within %.0f s: round %d, phase %s; %s"
                                    % (deadline, self.round, self.phase, self.tail("coordinator.log")))
            self.tick()
            time.sleep(0.2)
        self.tick()
        self.wall_s = self.now()
        if self.coord.returncode != 0:
            raise ProfileFailed("the coordinator exited with status %d; %s"
                                % (self.coord.returncode, self.tail("coordinator.log")))
        self.shutdown_at = time.time()
        if check_clients:
            self.expect_clients_exit(20, "after the coordinator's SHUTDOWN")

    def finish_admin(self):
        """Admin socket: once the driver is done, the coordinator finishes the
        round in flight (no more are queued) and goes idle; every site must be
        live then, and everything must stop promptly on SIGTERM."""
        self.finishing = True
        self.wait(lambda: (self.admin_cmd("status", "--json") or {}).get("state") == "idle", 240,
                  "the coordinator going idle after its last round")
        self.tick()
        st = self.admin_cmd("status", "--json")
        self.wall_s = self.now()
        if not st or st.get("live") != SITES:
            raise ProfileFailed("at the end %s of %d sites are live (medfed status: %s)"
                                % (st and st.get("live"), SITES, st))
        self.coord.send_signal(signal.SIGTERM)
        try:
            rc = self.coord.wait(15)
        except subprocess.TimeoutExpired:
            raise ProfileFailed("the coordinator did not stop within 15 s of SIGTERM")
        if rc != 0:
            raise ProfileFailed("the coordinator exited with status %d on SIGTERM" % rc)
        for p in self.clients.values():
            p.send_signal(signal.SIGTERM)
        self.expect_clients_exit(15, "after SIGTERM")

    def expect_clients_exit(self, grace, when, since=None):
        end = (since or time.time()) + grace
        while time.time() < end and any(p.poll() is None for p in self.clients.values()):
            time.sleep(0.2)
        hung = [k for k, p in self.clients.items() if p.poll() is None]
        failed = [(k, p.returncode) for k, p in self.clients.items() if p.poll() not in (None, 0)]
        if hung:
            raise ProfileFailed("%s still running %d s %s: %s" % (
                ", ".join(site_name(k) for k in hung), grace, when,
                self.tail(site_name(hung[0]) + ".log")))
        if failed:
            raise ProfileFailed("daemon exit status %s; %s" % (
                ", ".join("%s=%s" % (site_name(k), rc) for k, rc in failed),
                self.tail(site_name(failed[0][0]) + ".log")))

    def cpu_s(self, procs):
        """CPU seconds used so far by the live processes among procs."""
        total = 0.0
        for p in procs:
            try:
                f = open("/proc/%d/stat" % p.pid).read().rsplit(")", 1)[1].split()
                total += (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
            except (OSError, IndexError, ValueError):
                pass
        return total

    def stop(self):
        if self.relays and not hasattr(self, "relay_cpu_s"):
            self.relay_cpu_s = round(self.cpu_s(self.relays.values()), 2)
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        end = time.time() + 5
        for p in self.procs:
            try:
                p.wait(max(0.1, end - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    # checks over the metrics rows
    def check_rounds(self, must):
        """Every round completed; `must(row)` names the sites it had to include."""
        if self.sum_errors:
            raise ProfileFailed("exact sum: " + "; ".join(self.sum_errors))
        if not self.rows:
            raise ProfileFailed("no round finished")
        for row in self.rows:
            if row.get("aborted"):
                m = re.search(r"round=%d .*event=abort reason=(\"[^\"]*\")" % row["round"], self.log_text)
                raise ProfileFailed("round %d aborted: %s" % (row["round"], m.group(1) if m else row))
            need = must(row)
            missing = sorted(set(need) - set(row["included"]))
            if missing:
                raise ProfileFailed("round %d left out %s, which could take part (included %s; %s)" % (
                    row["round"], ", ".join(site_name(k) for k in missing), sorted(row["included"]),
                    "; ".join(re.findall(r"round=%d .*event=dropped reason=\"[^\"]*\"" % row["round"],
                                         self.log_text))[:600]))
        if self.sums_checked != len(self.rows):
            raise ProfileFailed("exact sum checked on %d of %d rounds" % (self.sums_checked, len(self.rows)))

    def phase_split(self):
        """Median seconds per part of a round (rounds 2..), from the coordinator's log:
        plan to keys relayed (model download if any, training, ADVERTISE), the
        masked inputs (serialised uploads), consistency + unmasking, evaluation
        (the new model's download, evaluating, results)."""
        marks = {}
        for m in re.finditer(r"(\d\d):(\d\d):(\d\d\.\d+) coordinator \w+ round=(\d+) phase=\w+ event=([\w-]+)",
                             self.log_text):
            t = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
            marks.setdefault(int(m.group(4)), {}).setdefault(m.group(5), t)
        parts = {"plan_to_keys": ("plan-sent", "keys-relayed"),
                 "masked_inputs": ("shares-routed", "consistency-requested"),
                 "unmask": ("consistency-requested", "aggregated"),
                 "eval": ("aggregated", "round-complete")}
        out = {}
        for name, (a, b) in parts.items():
            v = [(x[b] - x[a]) % 86400 for r, x in marks.items() if r > 1 and a in x and b in x]
            out[name] = round(statistics.median(v), 3) if v else None
        return out

    def summary(self):
        secs = [r["seconds"] for r in self.rows]
        later = secs[1:] or secs
        drops = re.findall(r"round=(\d+) phase=(\w+) client=(\S+) event=dropped reason=\"([^\"]*)\"",
                           self.log_text)
        return {
            "phase_s_median": self.phase_split(),
            "rounds": len(self.rows),
            "round_s": [round(s, 3) for s in secs],
            "round_s_median": round(statistics.median(later), 3) if later else None,
            "train_s": [r.get("train_seconds") for r in self.rows],
            "participants": [r["participants"] for r in self.rows],
            "bytes_down_per_round": [r["bytes_down"] for r in self.rows],
            "bytes_up_per_round": [r["bytes_up"] for r in self.rows],
            "drops": [{"round": int(r), "phase": p, "site": s, "reason": why} for r, p, s, why in drops],
            "exact_sum_rounds": self.sums_checked,
            "wall_s": round(getattr(self, "wall_s", self.now()), 1),
            "relay_cpu_s": getattr(self, "relay_cpu_s", None),
            "events": self.events,
        }


# ---- the profiles ----------------------------------------------------------------------

def relay_for(link, chunk=16384):
    half = link["rtt_ms"] / 2
    args = ["--delay", "%g" % half, "--jitter", "%g" % link["jitter_ms"], "--chunk", str(chunk)]
    if link["pause"]:
        args += ["--pause", link["pause"]]
    if link["loss"]:
        args += ["--loss-stall", "%g" % link["loss"]]
    return args


def wan_topology(h, name, links):
    """links[k]: the link profile of site k. Returns (net, coord_ns, site_ns)."""
    net = Net("%s-%s" % (h.tag, name[:4]))
    h.nets.append(net)
    cns = net.add_ns("c")
    sns = {}
    for k in range(SITES):
        sns[k] = net.add_ns("s%d" % k)
        net.veth(cns, sns[k], k)
        link = links[k]
        net.shape(cns, "wan%d" % k, link["down_mbit"], link["loss"])   # down: coordinator -> site
        net.shape(sns[k], "wan0", link["up_mbit"], link["loss"])       # up: site -> coordinator
    return net, cns, sns


def profile_loopback(h):
    net = Net("%s-loop" % h.tag)
    h.nets.append(net)
    ns = net.add_ns("lo")
    fed = Federation(h, "loopback", net, ns, {k: ns for k in range(SITES)}, admin=False)
    h.feds.append(fed)
    fed.start(4, "tcp://127.0.0.1:%d" % PORT)
    fed.finish_shutdown(deadline=150)
    fed.check_rounds(lambda row: range(SITES))
    return fed


def measured_profile(h, name, links, rounds=4, deadline=240, known=None):
    net, cns, sns = wan_topology(h, name, links)
    fed = Federation(h, name, net, cns, sns, admin=False)
    h.feds.append(fed)
    fed.start(rounds, "tcp://0.0.0.0:%d" % PORT, relay_args=lambda k: relay_for(links[k]))
    fed.finish_shutdown(deadline=deadline, check_clients=False)
    problems = []
    for check in (lambda: fed.check_rounds(lambda row: range(SITES)),
                  lambda: fed.expect_clients_exit(20, "after the coordinator's SHUTDOWN", since=fed.shutdown_at)):
        try:
            check()
        except ProfileFailed as e:
            problems.append(str(e))
    if problems:
        raise ProfileFailed("; ".join(problems) + ("\n    " + known if known else ""))
    fed.link_stats = {site_name(k): {"down": net.drops(cns, "wan%d" % k), "up": net.drops(sns[k], "wan0")}
                      for k in range(SITES)}
    return fed


def profile_vpn(h):
    return measured_profile(h, "hospital-vpn", {k: VPN for k in range(SITES)})


def profile_slow(h):
    links = {k: VPN for k in range(SITES)}
    links[SITES - 1] = SLOW
    return measured_profile(h, "slow-site", links, deadline=300)


def profile_thin_uplink(h):
    links = {k: VPN for k in range(SITES)}
    links[SITES - 1] = THIN_UP
    return measured_profile(
        h, "thin-uplink", links, rounds=1, deadline=300,
        known="%s's 3.1 MB masked upload takes ~36 s at 0.7 Mbit/s and its HEARTBEATs wait behind "
              "it in the same stream: the coordinator must take bytes arriving for progress "
              "(coordinator/coordinator.c, silent()), not only whole messages" % site_name(SITES - 1))


def profile_thin_downlink(h):
    links = {k: VPN for k in range(SITES)}
    links[SITES - 1] = THIN_DOWN
    return measured_profile(
        h, "thin-downlink", links, rounds=1, deadline=400,
        known="the 6.6 MB model takes ~75 s to reach %s at 0.7 Mbit/s, past the client's "
              "link_timeout (60 s): the client must take bytes arriving for progress "
              "(client/client.c, check_link), not wait for a ZMTP PONG queued behind the "
              "model" % site_name(SITES - 1))


def profile_thin_downlink_reset(h):
    """The thin downlink, and the site's connection reset once 3 MB of the
    model are down it (relay --cut-after): the site keeps its place in the
    round, reconnects and fetches the rest from where it stopped (protocol
    v4), so the round still includes it and its model arrives once."""
    links = {k: VPN for k in range(SITES)}
    thin = SITES - 1
    links[thin] = THIN_DOWN
    net, cns, sns = wan_topology(h, "thin-downlink-reset", links)
    fed = Federation(h, "thin-downlink-reset", net, cns, sns, admin=False)
    h.feds.append(fed)
    fed.start(1, "tcp://0.0.0.0:%d" % PORT,
              relay_args=lambda k: relay_for(links[k]) + (["--cut-after", "3000000"] if k == thin else []))
    fed.finish_shutdown(deadline=400, check_clients=False)
    fed.check_rounds(lambda row: range(SITES))
    fed.expect_clients_exit(20, "after the coordinator's SHUTDOWN", since=fed.shutdown_at)
    log_text = open(os.path.join(fed.logs, site_name(thin) + ".log"), errors="replace").read()
    m = re.search(r"round=1 event=model-received version=0 bytes=(\d+) received=(\d+) resumed_at=(\d+)", log_text)
    if "cut after" not in open(os.path.join(fed.logs, "relay-%s.log" % site_name(thin))).read():
        raise ProfileFailed("the relay never cut %s's connection" % site_name(thin))
    if not m or int(m.group(3)) < 1000000 or int(m.group(2)) != int(m.group(1)):
        raise ProfileFailed("%s did not resume its download where it stopped: %s"
                            % (site_name(thin), m.group(0) if m else "no model-received line"))
    fed.events.append({"event": "cut", "site": site_name(thin), "resumed_at": int(m.group(3)),
                       "model_bytes": int(m.group(1))})
    log("  thin-downlink-reset: %s resumed its model at byte %s of %s" % (site_name(thin), m.group(3), m.group(1)))
    fed.link_stats = {}
    return fed


def profile_flapping(h):
    rng = random.Random(WAN_SEED)
    site = 2
    net, cns, sns = wan_topology(h, "flapping", {k: VPN for k in range(SITES)})
    fed = Federation(h, "flapping", net, cns, sns, admin=True)
    h.feds.append(fed)
    fed.start(3, "tcp://0.0.0.0:%d" % PORT, relay_args=lambda k: relay_for(VPN))
    flaps = [rng.uniform(5, 12), rng.uniform(15, 30), rng.uniform(40, 60)]
    rng.shuffle(flaps)
    plan = [("flap", flaps[0]), ("reset", 0), ("flap", flaps[1]), ("reset", 0), ("flap", flaps[2])]
    after = time.time()
    for kind, dur in plan:
        fed.next_full_round(after)
        fed.sleep(rng.uniform(0.2, fed.typical_round()))  # a random moment of that round
        ev = {"event": kind, "site": site_name(site), "round": fed.round, "phase": fed.phase,
              "at_s": round(fed.now(), 1)}
        if kind == "flap":
            log("  flapping: %s link down for %.1f s (round %d, %s)" % (site_name(site), dur, fed.round, fed.phase))
            sh("ip", "-n", cns, "link", "set", "wan%d" % site, "down")
            fed.sleep(dur)
            sh("ip", "-n", cns, "link", "set", "wan%d" % site, "up")
            ev["seconds"] = round(dur, 1)
        else:
            log("  flapping: %s connection reset mid-stream (round %d, %s)" % (site_name(site), fed.round, fed.phase))
            fed.relays[site].send_signal(signal.SIGUSR1)
        after = time.time()
        ev["end_s"] = round(fed.now(), 1)
        fed.events.append(ev)
    # Back after the last one: a round with every site starts, and finishes.
    last = fed.next_full_round(after)
    for ev in fed.events:
        back = next((t for t, _, c in fed.starts if t > fed.t0 + ev["end_s"] and c == SITES), None)
        ev["back_in_a_round_after_s"] = round(back - fed.t0 - ev["end_s"], 1) if back else None
    fed.wait(lambda: fed.round_done(last), 240, "round %d (all sites, after the last flap) finishing" % last)
    fed.finish_admin()
    for ev in fed.events:  # did the site ride the event out, or was it dropped from that round?
        row = next((r for r in fed.rows if r["round"] == ev["round"]), None)
        ev["site_stayed_in_round"] = bool(row and site in row["included"])
    fed.check_rounds(lambda row: [k for k in range(SITES) if k != site])
    if site not in fed.rows[-1]["included"]:
        raise ProfileFailed("%s is not in the last round" % site_name(site))
    return fed


def profile_partition(h):
    rng = random.Random(WAN_SEED + 1)
    cut = list(range(SITES - SITES // 3, SITES))
    net, cns, sns = wan_topology(h, "partition", {k: VPN for k in range(SITES)})
    fed = Federation(h, "partition", net, cns, sns, admin=True)
    h.feds.append(fed)
    fed.start(3, "tcp://0.0.0.0:%d" % PORT, relay_args=lambda k: relay_for(VPN))
    fed.wait(lambda: any(r == 2 for _, r, _ in fed.starts), 240, "round 2 starting")
    fed.sleep(rng.uniform(0.2, fed.typical_round()))  # a random moment of round 2
    cut_round, phase = fed.round, fed.phase
    log("  partition: %s cut off in round %d (%s) for 45 s" % (", ".join(map(site_name, cut)), cut_round, phase))
    for k in cut:
        sh("ip", "-n", cns, "link", "set", "wan%d" % k, "down")
    ev = {"event": "partition", "sites": [site_name(k) for k in cut], "round": cut_round, "phase": phase,
          "at_s": round(fed.now(), 1)}
    fed.sleep(45)
    for k in cut:
        sh("ip", "-n", cns, "link", "set", "wan%d" % k, "up")
    healed = time.time()
    ev["end_s"] = round(fed.now(), 1)
    fed.events.append(ev)
    r = fed.next_full_round(healed)
    ev["back_in_a_round_after_s"] = round(next(t for t, rr, _ in fed.starts if rr == r) - healed, 1)
    fed.wait(lambda: fed.round_done(r), 240, "round %d (the cut-off sites back) finishing" % r)
    fed.finish_admin()
    row = next((x for x in fed.rows if x["round"] == cut_round), None)
    ev["cut_round_included"] = row and sorted(row["included"])
    ev["cut_round_s"] = row and row["seconds"]  # ~heartbeat_timeout (30 s) + the round, or the whole cut
    fed.check_rounds(lambda row: [k for k in range(SITES) if k not in cut])
    if row is None:
        raise ProfileFailed("round %d, the one cut, never finished" % cut_round)
    return fed


PROFILES = [("loopback", profile_loopback), ("hospital-vpn", profile_vpn), ("slow-site", profile_slow),
            ("flapping", profile_flapping), ("partition", profile_partition),
            ("thin-uplink", profile_thin_uplink), ("thin-downlink", profile_thin_downlink),
            ("thin-downlink-reset", profile_thin_downlink_reset)]
# Run only when named in WAN_ONLY: none at present.
EXTRA = []


# ---- main -----------------------------------------------------------------------------

class Harness:
    pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--hooks-bin", required=True)
    ap.add_argument("--relay", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    if os.geteuid() != 0:
        log("FAIL: needs root (network namespaces, tc); CI runs as root")
        return 1
    only = os.environ.get("WAN_ONLY", "").replace(",", " ").split()
    h = Harness()
    h.bin, h.hbin, h.relay = (os.path.abspath(x) for x in (a.bin, a.hooks_bin, a.relay))
    h.tag = "mfwan-%d" % os.getpid()
    h.nets, h.feds = [], []
    h.work = tempfile.mkdtemp(prefix="medfed-wan.")
    results, failed = {}, 0

    def on_signal(sig, _frame):  # once: a second signal must not cut the clean-up short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt("signal %d" % sig)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        clean_stale()
        probe = Net(h.tag + "-probe")
        h.nets.append(probe)
        try:
            ns = probe.add_ns("x")
            probe.add_ns("y")
            probe.veth(ns, probe.made[1], 0)
            probe.shape(ns, "wan0", 100, 0.005)
        except RuntimeError as e:
            log("FAIL: cannot build the emulated network (ip netns, veth, htb, cls_bpf): %s" % e)
            return 1
        finally:
            probe.close()
        try:
            h.kit = Kit(h.work, h.bin, h.hbin)
        except (OSError, RuntimeError, AssertionError) as e:
            log("FAIL: cannot prepare the federation's files: %s" % e)
            return 1
        unknown = set(only) - {n for n, _ in PROFILES + EXTRA}
        if unknown:
            log("FAIL: no profile named %s" % ", ".join(sorted(unknown)))
            return 1
        log("WAN_SEED=%d (the same seed replays the same flaps, cuts and stalls)" % WAN_SEED)
        for name, fn in PROFILES + EXTRA:
            if (only and name not in only) or (not only and (name, fn) in EXTRA):
                continue
            log("%s ..." % name)
            t = time.time()
            fed = None
            try:
                fed = fn(h)
                res = {"pass": True}
            except ProfileFailed as e:
                res = {"pass": False, "reason": str(e)}
            except Exception as e:  # a bug in the test itself: say so, go on
                res = {"pass": False, "reason": "test error: %s" % e, "traceback": traceback.format_exc()}
            finally:
                for f in h.feds:
                    f.stop()
                for n in h.nets:
                    n.close()
            fed = fed or (h.feds[-1] if h.feds and h.feds[-1].name == name else None)
            if fed:
                res.update(fed.summary())
                if getattr(fed, "link_stats", None):
                    res["link_stats"] = fed.link_stats
            h.feds, h.nets = [], []
            res["seconds"] = round(time.time() - t, 1)
            results[name] = res
            if res["pass"]:
                log("ok   %s: %d rounds, median round %.2f s (%s), %.0f s in all" % (
                    name, res["rounds"], res["round_s_median"],
                    ", ".join("%s %.2f" % kv for kv in res["phase_s_median"].items() if kv[1] is not None),
                    res["seconds"]))
            else:
                failed += 1
                log("FAIL %s: %s" % (name, res["reason"]))
                if "traceback" in res:
                    print(res["traceback"])
    except KeyboardInterrupt as e:
        log("interrupted (%s): cleaning up" % e)
        failed += 1
    finally:
        for f in h.feds:
            f.stop()
        for n in h.nets:
            n.close()
        left = [l for l in sh("ip", "netns", "list", check=False).stdout.splitlines() if h.tag in l]
        if left:
            log("FAIL: namespaces left behind: %s" % left)
            failed += 1

    report(results, a.out)
    if failed or os.environ.get("WAN_KEEP"):
        log("logs kept in %s" % h.work)
    else:
        shutil.rmtree(h.work, ignore_errors=True)
    log("%d profile(s) passed, %d failed" % (sum(r["pass"] for r in results.values()), failed))
    return 1 if failed else 0


def report(results, out):
    base = (results.get("loopback") or {}).get("round_s_median")
    log("round time, cnn (1.66M parameters), 6 sites, secure aggregation + CURVE, median of rounds 2..:")
    for name in [n for n, _ in PROFILES + EXTRA]:
        r = results.get(name)
        if not r or r.get("round_s_median") is None:
            continue
        ratio = " (%.2fx loopback)" % (r["round_s_median"] / base) if base else ""
        log("  %-13s %6.2f s%s  [%s]" % (name, r["round_s_median"], ratio, "ok" if r["pass"] else "FAIL"))
    doc = {
        "model": "cnn", "params": 1659266, "sites": SITES, "train_images_per_site": TRAIN_PER_SITE,
        "local_epochs": 1, "secure_aggregation": True, "curve": True,
        "links": {"hospital-vpn": VPN, "slow-site": dict(SLOW, site=site_name(SITES - 1), others="hospital-vpn"),
                  "thin-uplink": dict(THIN_UP, site=site_name(SITES - 1), others="hospital-vpn"),
                  "thin-downlink": dict(THIN_DOWN, site=site_name(SITES - 1), others="hospital-vpn")},
        "emulation": "htb rate + cBPF random drop on veth pairs (no netem on this kernel); delay, jitter, "
                     "stalls and loss-recovery stalls in tests/wan/relay.c; TCP itself runs at the veth's "
                     "round trip, so loss does not slow its window growth",
        "round_s_median": {n: r.get("round_s_median") for n, r in results.items()},
        "vs_loopback": {n: round(r["round_s_median"] / base, 3) for n, r in results.items()
                        if base and r.get("round_s_median")},
        "profiles": results,
        "wan_seed": WAN_SEED,
        "coordinator_args": os.environ.get("WAN_COORD_ARGS", ""),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(doc, f, indent=1)
    log("results in %s" % out)


if __name__ == "__main__":
    sys.exit(main())
