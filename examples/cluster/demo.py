#!/usr/bin/env python3
"""A four-node mc cluster in network namespaces: etcd, auth_token, KV handoff, a node killed and back.

    demo.py BUILD_DIR [--scale small|full]

Makes four network namespaces joined by a bridge (the bridge lives in a fifth, "hub", namespace,
so the machine's own namespace gets no address, route or link), runs etcd in the first, and an
engine in each (examples/cluster/node.c: name nodeN, metadata=etcd://..., a shared auth_token,
metrics_listen, transports=tcp). Every node hands KV blocks to every other one (WRITE + NOTIFY;
the receiver checks every byte and NOTIFYs an ack). Then node3 is killed with SIGKILL and started
again under the same name, and what the other nodes saw is printed: segment state changes,
rejoins, requests completed and failed, throughput, from mc_engine_stats_json and GET /metrics.
Exits non-zero when anything is wrong (a byte, a missing rejoin, no request completed to the
restarted node, a request failed after its rejoin) or when it cannot run here (no root /
CAP_NET_ADMIN). Namespaces carry this process's pid; ones left by a demo that no longer runs are
removed at start. Needs root, iproute2 and etcd (scripts/install-deps.sh).
"""

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

SCALES = {
    # phase: seconds of traffic before the kill and after the rejoin
    "small": dict(phase=1.5, block_kib=64, heartbeat_ms=200, peer_timeout_ms=1500, timeout_ms=3000),
    "full": dict(phase=5.0, block_kib=1024, heartbeat_ms=250, peer_timeout_ms=2000, timeout_ms=4000),
}
NODES = 4
VICTIM = 3
PREFIX = "mcd"


def sh(*cmd, check=True):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip() or r.returncode}")
    return r


class Fabric:
    """The namespaces: PREFIX<pid>-n0..n3, each with eth0 on a veth whose other end is on bridge
    br0 in PREFIX<pid>-hub; addresses 10.253.S.1..4/24 live only inside them."""

    def __init__(self):
        self.tag = f"{PREFIX}{os.getpid()}"
        self.hub = f"{self.tag}-hub"
        self.ns = [f"{self.tag}-n{i}" for i in range(NODES)]
        s = os.getpid() % 250 + 1
        self.ip = [f"10.253.{s}.{i + 1}" for i in range(NODES)]
        self.made = []

    @staticmethod
    def reap():
        """Removes namespaces of earlier demos whose process is gone (killed with SIGKILL, say),
        and ends what still runs in them (their etcd: the nodes die with their demo)."""
        out = sh("ip", "netns", "list", check=False).stdout
        for m in re.finditer(rf"^({PREFIX}(\d+)-(hub|n\d+))\b", out, re.M):
            if not os.path.exists(f"/proc/{m.group(2)}"):
                for pid in sh("ip", "netns", "pids", m.group(1), check=False).stdout.split():
                    os.kill(int(pid), signal.SIGKILL)
                sh("ip", "netns", "del", m.group(1), check=False)

    def up(self):
        for ns in [self.hub] + self.ns:
            sh("ip", "netns", "add", ns)
            self.made.append(ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.hub, "link", "set", "br0", "up")
        for i, ns in enumerate(self.ns):
            sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"v{i}", "netns", self.hub)
            sh("ip", "-n", self.hub, "link", "set", f"v{i}", "master", "br0", "up")
            sh("ip", "-n", ns, "addr", "add", f"{self.ip[i]}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")

    def down(self):
        for ns in reversed(self.made):
            sh("ip", "netns", "del", ns, check=False)
        self.made = []


def can_run():
    """None when namespaces can be made here, else why not."""
    if os.geteuid() != 0:
        return "it must run as root (it creates network namespaces: CAP_NET_ADMIN and CAP_SYS_ADMIN)"
    for tool in ("ip", "etcd", "etcdctl"):
        if not shutil.which(tool):
            return f"'{tool}' is not installed (scripts/install-deps.sh installs iproute2 and etcd)"
    probe = f"{PREFIX}{os.getpid()}-chk"
    r = sh("ip", "netns", "add", probe, check=False)
    if r.returncode != 0:
        return f"no CAP_NET_ADMIN here: 'ip netns add' failed: {r.stderr.strip()}"
    r = sh("ip", "-n", probe, "link", "add", "br0", "type", "bridge", check=False)
    sh("ip", "netns", "del", probe, check=False)
    if r.returncode != 0:
        return f"cannot create a bridge in a namespace: {r.stderr.strip()}"
    return None


class Node:
    """One mc_cluster_node process in its namespace; a thread collects its stdout lines."""

    def __init__(self, demo, i):
        self.demo, self.i, self.name = demo, i, f"node{i}"
        self.lines, self.proc, self.summary, self.eof = [], None, None, False
        self.cv = threading.Condition()

    def start(self):
        d, ip = self.demo, self.demo.fab.ip[self.i]
        cmd = ["ip", "netns", "exec", d.fab.ns[self.i], d.node_bin, "--name", self.name,
               "--nodes", ",".join(f"node{j}" for j in range(NODES)), "--listen", f"{ip}:7400",
               "--metadata", d.etcd_url, "--metrics", f"{ip}:9464", "--block-kib", str(d.cfg["block_kib"])]
        cmd += ["--set", f"heartbeat_ms={d.cfg['heartbeat_ms']}"]
        for k in ("peer_timeout_ms", "timeout_ms"):  # longer on a loaded machine (MC_TEST_SLACK)
            cmd += ["--set", f"{k}={int(d.cfg[k] * d.slack)}"]
        cmd += ["--set", "transports=tcp", "--set", "metadata_ttl_ms=2000"]
        err = open(os.path.join(d.tmp, f"{self.name}.err"), "a")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=d.env)
        with self.cv:
            self.lines, self.eof = [], False
        threading.Thread(target=self.read, args=(self.proc,), daemon=True).start()

    def read(self, proc):
        for line in proc.stdout:
            line = line.rstrip("\n")
            with self.cv:
                self.lines.append(line)
                self.cv.notify_all()
            self.demo.show(self, line)
        with self.cv:
            if proc is self.proc:
                self.eof = True
            self.cv.notify_all()

    def wait_for(self, pred, what, timeout):
        """Waits until a line satisfies pred; returns it. Fails the demo after timeout seconds."""
        end = time.monotonic() + timeout * self.demo.slack
        with self.cv:
            while True:
                for line in self.lines:
                    if pred(line):
                        return line
                if self.eof:
                    raise Failure(f"{self.name} exited ({self.proc.returncode}) before {what}; "
                                  f"see {self.demo.tmp}/{self.name}.err")
                left = end - time.monotonic()
                if left <= 0:
                    raise Failure(f"{self.name}: no {what} within {timeout * self.demo.slack:.0f} s")
                self.cv.wait(min(left, 0.1))

    def signal(self, sig):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)


class Failure(Exception):
    pass


class Demo:
    def __init__(self, args):
        self.cfg = SCALES[args.scale]
        self.node_bin = os.path.abspath(os.path.join(args.build, "bin", "mc_cluster_node"))
        self.slack = float(os.environ.get("MC_TEST_SLACK", "1"))
        self.fab = Fabric()
        self.tmp = tempfile.mkdtemp(prefix="mc-demo-cluster.")
        self.env = dict(os.environ, MC_AUTH_TOKEN=secrets.token_hex(24))
        self.etcd_url = f"etcd://{self.fab.ip[0]}:2379"
        self.etcd = None
        self.nodes = [Node(self, i) for i in range(NODES)]
        self.t0 = time.monotonic()
        self.out_lock = threading.Lock()
        self.incs = {}

    def say(self, text):
        with self.out_lock:
            print(f"[{time.monotonic() - self.t0:6.2f}s] {text}", flush=True)

    def show(self, node, line):
        """Prints what a node reports as it happens (events, readiness), not the summaries."""
        f = line.split()
        if f[0] == "READY":
            self.say(f"{node.name}: engine up, incarnation {f[2][:8]}..")
        elif f[0] == "EV":
            what = "rejoined with a new incarnation" if "rejoin" in f else f"is {f[3]}"
            self.say(f"{node.name} sees {f[2]} {what} (incarnation {f[4][:8]}..)")
        elif f[0] == "TRAFFIC":
            self.say(f"{node.name}: handing blocks to {f[2]} (incarnation {f[3][:8]}..)")

    def start_etcd(self):
        url = f"http://{self.fab.ip[0]}:2379"
        peer = "http://127.0.0.1:2380"
        log = open(os.path.join(self.tmp, "etcd.log"), "w")
        self.etcd = subprocess.Popen(
            ["ip", "netns", "exec", self.fab.ns[0], "etcd", "--name", "demo", "--data-dir",
             os.path.join(self.tmp, "etcd"), "--listen-client-urls", url, "--advertise-client-urls", url,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster",
             f"demo={peer}"], stdout=log, stderr=log)
        end = time.monotonic() + 15 * self.slack
        while time.monotonic() < end:
            r = sh("ip", "netns", "exec", self.fab.ns[0], "etcdctl", "--endpoints", url,
                   "--command-timeout=1s", "endpoint", "health", check=False)
            if r.returncode == 0:
                self.say(f"etcd serves {url} in {self.fab.ns[0]}")
                return
            if self.etcd.poll() is not None:
                break
            time.sleep(0.2)
        raise Failure(f"etcd did not come up; see {self.tmp}/etcd.log")

    def traffic_to_all(self, node, inc_of=None):
        """Waits until node hands blocks to every other node (to inc_of's incarnation, if given)."""
        for j in range(NODES):
            if j == node.i:
                continue
            want = f"node{j}"
            node.wait_for(lambda l: l.startswith(f"TRAFFIC ") and l.split()[2] == want and
                          (inc_of is None or j != inc_of[0] or l.split()[3] == inc_of[1]),
                          f"traffic to {want}", 20)

    def run(self):
        self.fab.up()
        self.say(f"namespaces {self.fab.hub} (bridge br0) and {', '.join(self.fab.ns)}; "
                 f"nodes at {', '.join(self.fab.ip)}")
        self.start_etcd()
        for n in self.nodes:
            n.start()
        for n in self.nodes:
            n.wait_for(lambda l: l.startswith("READY"), "READY", 20)
            self.traffic_to_all(n)
        self.say(f"all four nodes hand blocks to each other; traffic for {self.cfg['phase']} s")
        time.sleep(self.cfg["phase"])
        victim = self.nodes[VICTIM]
        old = victim.wait_for(lambda l: l.startswith("READY"), "READY", 1).split()[2]
        victim.proc.kill()
        victim.proc.wait()
        self.say(f"killed {victim.name} (SIGKILL)")
        others = [n for n in self.nodes if n.i != VICTIM]
        for n in others:
            n.wait_for(lambda l: l.startswith("EV ") and l.split()[2] == victim.name and l.split()[3] == "UNREACHABLE",
                       f"{victim.name} UNREACHABLE", 15)
        victim.start()
        new = victim.wait_for(lambda l: l.startswith("READY"), "READY after the restart", 30).split()[2]
        self.say(f"restarted {victim.name} under the same name")
        for n in others:
            n.wait_for(lambda l: l.startswith("EV ") and l.split()[2] == victim.name and "rejoin" in l,
                       f"rejoin of {victim.name}", 20)
            self.traffic_to_all(n, (VICTIM, new))
        self.traffic_to_all(victim)
        self.say(f"{victim.name} is back in every node's traffic; traffic for {self.cfg['phase']} s")
        time.sleep(self.cfg["phase"])
        for n in self.nodes:
            n.signal(signal.SIGUSR1)
        for n in self.nodes:
            n.wait_for(lambda l: l == "DRAINED", "DRAINED", 15)
        metrics = [self.scrape(n) for n in self.nodes]
        for n in self.nodes:
            n.signal(signal.SIGTERM)
        for n in self.nodes:
            line = n.wait_for(lambda l: l.startswith("SUMMARY "), "SUMMARY", 15)
            n.summary = json.loads(line[len("SUMMARY "):])
            if n.proc.wait(timeout=15 * self.slack) != 0:
                raise Failure(f"{n.name} exited {n.proc.returncode}; see {self.tmp}/{n.name}.err")
        return self.report(metrics, old, new)

    def scrape(self, n):
        """GET /metrics of node n, fetched from inside its namespace: {sample: value}."""
        url = f"http://{self.fab.ip[n.i]}:9464/metrics"
        code = f"import urllib.request; print(urllib.request.urlopen('{url}', timeout=5).read().decode())"
        r = sh("ip", "netns", "exec", self.fab.ns[n.i], sys.executable, "-c", code)
        out = {}
        for line in r.stdout.splitlines():
            if line and not line.startswith("#"):
                k, _, v = line.rpartition(" ")
                out[k] = float(v)
        return out

    def report(self, metrics, old, new):
        print()
        print(f"What each node saw ({self.cfg['block_kib']} KiB blocks, tcp across the bridge; "
              f"node3 killed and restarted: incarnation {old[:8]}.. -> {new[:8]}..):")
        hdr = (f"{'node':6} {'requests ok':>11} {'failed':>6} {'failures':34} {'state changes':>13} "
               f"{'rejoins':>7} {'segments ok/unr':>15} {'written MB/s':>12} {'blocks checked':>14}")
        print(hdr)
        problems = []
        for n, m in zip(self.nodes, metrics):
            s, st = n.summary, n.summary["stats"]
            secs = max(1e-3, (s["t_end"] - s["t_start"]) / 1000)
            fails = ",".join(f"{k.replace('MC_ERR_', '')}:{v}" for k, v in st["failures"].items()) or "-"
            changes = self.state_changes(n)
            print(f"{n.name:6} {st['requests_completed']:>11} {st['requests_failed']:>6} {fails:34} {changes:>13} "
                  f"{st['rejoins_total']:>7} {st['segments']['ok']:>7}/{st['segments']['unreachable']:<7} "
                  f"{st['bytes_written'] / secs / 1e6:>12.1f} {s['verified']:>14}")
            problems += self.check(n, m)
        print()
        print(f"Requests to {self.nodes[VICTIM].name} as its peers counted them (batches of WRITE+NOTIFY):")
        for n in self.nodes:
            if n.i == VICTIM:
                continue
            p = next(p for p in n.summary["peers"] if p["peer"] == self.nodes[VICTIM].name)
            print(f"  {n.name}: {p['completed']} completed, {p['failed']} failed, {p['lost']} unacked "
                  f"(in flight at the kill); after the rejoin: {p['after_rejoin_completed']} completed, "
                  f"{p['after_rejoin_failed']} failed, {p['after_rejoin_acked']} checked by {self.nodes[VICTIM].name}")
        m = metrics[0]
        print()
        print("GET /metrics of node0 (some of it):")
        for k in sorted(m):
            if re.match(r"mc_(rejoins_total|segments|request_failures_total|failover_\w+_total)\b", k) or \
               re.match(r'mc_(requests|bytes)_total\{transport="tcp",direction="write"', k) or \
               re.match(r'mc_notify_total\{event="(sent|received)"', k):
                print(f"  {k} {m[k]:.0f}")
        print()
        if problems:
            for p in problems:
                print(f"demo-cluster: FAILED: {p}")
            self.show_errors()
            return 1
        print("demo-cluster: ok (every block checked, node3 rejoined in every peer's view, requests after "
              "the rejoin completed, /metrics agrees with mc_engine_stats_json)")
        return 0

    @staticmethod
    def state_changes(n):
        """OK <-> UNREACHABLE changes among node n's segment callbacks (a rejoin's callback says
        OK: it counts when the segment was UNREACHABLE before)."""
        last, changes = {}, 0
        for f in (line.split() for line in n.lines if line.startswith("EV ")):
            changes += last.get(f[2], "OK") != f[3]
            last[f[2]] = f[3]
        return changes

    def check(self, n, m):
        s, st, bad = n.summary, n.summary["stats"], []
        if s["verify_bad"] or any(p["bad"] for p in s["peers"]):
            bad.append(f"{n.name}: blocks with wrong bytes")
        if s["verified"] == 0:
            bad.append(f"{n.name}: checked no block")
        if st["requests_completed"] == 0:
            bad.append(f"{n.name}: no request completed")
        done = sum(v for k, v in m.items() if k.startswith("mc_requests_total{") and 'outcome="completed"' in k)
        if done != st["requests_completed"] or m.get("mc_rejoins_total") != st["rejoins_total"]:
            bad.append(f"{n.name}: /metrics ({done:.0f} completed, {m.get('mc_rejoins_total')} rejoins) "
                       f"disagrees with mc_engine_stats_json ({st['requests_completed']}, {st['rejoins_total']})")
        for p in s["peers"]:
            if n.i == VICTIM and (p["completed"] == 0 or p["failed"]):
                bad.append(f"{n.name} (restarted): to {p['peer']} {p['completed']} completed, {p['failed']} failed")
            if p["peer"] != self.nodes[VICTIM].name:
                continue
            if p["rejoins"] < 1 or st["rejoins_total"] < 1:
                bad.append(f"{n.name}: did not see {p['peer']} rejoin")
            if p["after_rejoin_completed"] == 0 or p["after_rejoin_acked"] == 0 or p["after_rejoin_failed"]:
                bad.append(f"{n.name}: after {p['peer']}'s rejoin {p['after_rejoin_completed']} completed, "
                           f"{p['after_rejoin_acked']} checked, {p['after_rejoin_failed']} failed")
        return bad

    def show_errors(self):
        """The end of what each node wrote on stderr (its log), after a failure."""
        for n in self.nodes:
            path = os.path.join(self.tmp, f"{n.name}.err")
            if os.path.exists(path) and os.path.getsize(path):
                print(f"--- {n.name} stderr:\n{open(path).read()[-3000:]}", file=sys.stderr)

    def cleanup(self):
        for n in self.nodes:
            if n.proc and n.proc.poll() is None:
                n.proc.kill()
                n.proc.wait()
        if self.etcd and self.etcd.poll() is None:
            self.etcd.terminate()
            try:
                self.etcd.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.etcd.kill()
                self.etcd.wait()
        self.fab.down()
        if os.environ.get("MC_DEMO_KEEP"):
            print(f"demo-cluster: logs kept in {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("build", nargs="?", default="build")
    p.add_argument("--scale", choices=sorted(SCALES), default="full")
    args = p.parse_args()
    why = can_run()
    if why:
        print(f"demo-cluster: cannot run here: {why}", file=sys.stderr)
        return 2
    if not os.access(os.path.join(args.build, "bin", "mc_cluster_node"), os.X_OK):
        print(f"demo-cluster: {args.build}/bin/mc_cluster_node not found; run 'make all' first", file=sys.stderr)
        return 2
    Fabric.reap()
    # Ctrl-C, SIGTERM and SIGHUP end the demo through cleanup (SIGINT too when started where it
    # was ignored, as a background job of a script is).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda s, f: (_ for _ in ()).throw(KeyboardInterrupt()))
    demo = Demo(args)
    t = time.monotonic()
    try:
        rc = demo.run()
    except Failure as e:
        print(f"demo-cluster: FAILED: {e}", file=sys.stderr)
        demo.show_errors()
        rc = 1
    except KeyboardInterrupt:
        print("demo-cluster: interrupted", file=sys.stderr)
        rc = 130
    finally:
        demo.cleanup()
    print(f"demo-cluster: {time.monotonic() - t:.1f} s, namespaces removed")
    return rc


if __name__ == "__main__":
    sys.exit(main())
