#!/usr/bin/env python3
"""The chat example deployed on loopback: a redis-server, N chat instances and nginx in front of
them (round robin, no stickiness). Used by scripts/demo-web (which serves until Ctrl-C) and by the
browser test (Tests/Browser/chat_test.py), which also kills and restarts instances.

    python3 Examples/Chat/deployment.py BINARY [--instances 3] [--idle 30] [--warning 10]

The instances get a random admin token (CHAT_ADMIN_TOKEN, in their environment only) for
GET /admin/hook-runs: `Deployment.admin_token`, and a curl header file in the deployment's
directory (`Deployment.admin_headers`, readable by this user only).
"""
import argparse
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

NGINX = """
worker_processes 1;
daemon off;
{user}
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  # Round robin, no stickiness: consecutive requests of one browser go to different instances.
  upstream chat {{
{servers}
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://chat;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      # An instance that is down: GETs go to the next one (POSTs are not retried: not idempotent).
      proxy_next_upstream error timeout http_502;
      proxy_connect_timeout 1s;
    }}
  }}
}}
"""


def free_ports(count):
    # Held open together until all are chosen: ports probed one after the other can come back
    # twice (the kernel hands a closed port out again), and two servers then race for one port.
    probes = []
    try:
        for _ in range(count):
            probe = socket.socket()
            probe.bind(("127.0.0.1", 0))
            probes.append(probe)
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def wait_for(url, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status < 500:
                    return
        except Exception:
            time.sleep(0.1)
    raise RuntimeError("%s did not answer within %d s" % (url, timeout))


class Deployment:
    def __init__(self, binary, instances=3, idle=30, warning=10):
        self.binary = os.path.abspath(binary)
        self.count = instances
        self.idle = idle
        self.warning = warning
        self.dir = tempfile.mkdtemp(prefix="ssc-chat-")
        self.admin_token = secrets.token_urlsafe(32)
        ports = free_ports(2 + 2 * instances)
        self.redis_port, self.port = ports[0], ports[1]
        self.ports = ports[2:2 + instances]
        self.metrics_ports = ports[2 + instances:]
        self.instances = [None] * instances
        self.redis = None
        self.nginx = None

    @property
    def url(self):
        return "http://127.0.0.1:%d/" % self.port

    @property
    def admin_headers(self):
        return os.path.join(self.dir, "admin-headers")

    def log(self, index):
        return os.path.join(self.dir, "chat-%d.log" % index)

    def start(self):
        # For `curl -H @FILE`: the token stays out of every command line.
        descriptor = os.open(self.admin_headers, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write("Authorization: Bearer %s\n" % self.admin_token)
        self.redis = subprocess.Popen(
            ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "", "--dir", self.dir,
             "--notify-keyspace-events", "KEx"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for index in range(self.count):
            self.start_instance(index)
        servers = "\n".join("    server 127.0.0.1:%d max_fails=1 fail_timeout=2s;" % port for port in self.ports)
        user = "user root;" if os.geteuid() == 0 else ""
        config = os.path.join(self.dir, "nginx.conf")
        with open(config, "w") as file:
            file.write(NGINX.format(dir=self.dir, servers=servers, port=self.port, user=user))
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.nginx = subprocess.Popen([nginx, "-c", config, "-p", self.dir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self.url + "api/state")
        return self

    def start_instance(self, index):
        environment = dict(os.environ)
        environment.update({
            "PORT": str(self.ports[index]), "INSTANCE": "chat-%d" % (index + 1),
            "REDIS_URL": "redis://127.0.0.1:%d" % self.redis_port, "CHAT_IDLE_SECONDS": str(self.idle),
            "CHAT_WARNING_SECONDS": str(self.warning), "SECURE_COOKIE": "0", "METRICS_PORT": str(self.metrics_ports[index]),
            "CHAT_ADMIN_TOKEN": self.admin_token,
        })
        with open(self.log(index), "a") as log:
            self.instances[index] = subprocess.Popen([self.binary], env=environment, stdout=log, stderr=subprocess.STDOUT)
        wait_for("http://127.0.0.1:%d/api/state" % self.ports[index])

    def kill_instance(self, index):
        self.instances[index].send_signal(signal.SIGKILL)
        self.instances[index].wait()

    def hook_log_lines(self):
        lines = []
        for index in range(self.count):
            with open(self.log(index)) as log:
                lines += [line for line in log if "cleanup hook ran" in line]
        return lines

    def stop(self):
        for process in [self.nginx] + self.instances + [self.redis]:
            if process and process.poll() is None:
                try:
                    process.send_signal(signal.SIGTERM)
                    process.wait(timeout=10)
                except (subprocess.TimeoutExpired, ProcessLookupError):
                    process.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--idle", type=int, default=30)
    parser.add_argument("--warning", type=int, default=10)
    arguments = parser.parse_args()
    deployment = Deployment(arguments.binary, arguments.instances, arguments.idle, arguments.warning).start()
    print("chat: %s  (%d instances behind nginx, Redis on port %d; Ctrl-C stops)" % (deployment.url, deployment.count, deployment.redis_port))
    print("metrics: " + ", ".join("http://127.0.0.1:%d/metrics" % port for port in deployment.metrics_ports))
    print("hook runs: curl -H @%s %sadmin/hook-runs" % (deployment.admin_headers, deployment.url))
    sys.stdout.flush()
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        # A terminal's Ctrl-C reaches the whole process group (the instances stop gracefully by
        # themselves); a second one must not interrupt the clean-up.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        deployment.stop()


if __name__ == "__main__":
    main()
