"""Client CPU per S3 GET: obstore vs s3fs, alone and inside a build.

    python benchmarks/bench_s3_cpu.py --gets 1000 --size 256kB
    python benchmarks/bench_s3_cpu.py --build --n 48 --rows 512 --budgets 40MB,256MB
    python benchmarks/bench_s3_cpu.py --overhead
    python benchmarks/bench_s3_cpu.py --server nginx [--build --budgets 100MB,256MB]

moto's S3 server and the test proxy (keep-alive connections, as S3 has) run in this
process; every client runs in a child process, whose CPU (user + sys, ``os.wait4``) is
the client's alone.  With ``--server nginx`` the objects are files served by nginx
instead (Debian's nginx-light): it answers HEAD and ranged GETs with If-Match as S3 does
(it signs and lists nothing, so a build's inputs are named one by one), and it sends as
a real store does, in large writes from the page cache, where moto and the proxy are
Python that send in small pieces: each piece is one more wake-up of the client.

* Default: ``--gets`` ranged GETs of ``--size`` bytes of one object, 32 at a time,
  through each client (s3fs's aiobotocore client, as fficube used it; obstore, as
  :mod:`fficube.sources.obstore` uses it, If-Match included: two calls, ``get_async``
  then ``bytes_async``; and obstore in one call, ``get_range_async``, which takes no
  If-Match: what the second call costs); CPU minus that of an idle child that only
  starts the client, per GET.  Each call is a future that obstore completes from its
  own threads, and each completion takes the GIL from there (under ``strace -f -c``,
  about 17 futex calls per completion).
* ``--overhead``: fficube's own CPU per read, without any client: a
  :class:`fficube.sources.remote.RemoteSource` whose request answers at once, read through
  ``read_batch`` in groups of 128 as the fetch stage does (counting, retries, ETag pin,
  semaphore, hedge timer and the task each read runs in).
* ``--build``: the same S3 -> local-file build at two budgets (so with two numbers of
  GETs); the CPU difference divided by the GET difference is what one more GET costs in
  a whole build, with fficube's own per-read work.  Both clients: obstore, and s3fs
  (forced with ``use_ssl=False``, an option obstore does not take).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

CLIENT = """
import asyncio, json, sys
url, key, n, size, client = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]

async def main():
    limit = asyncio.Semaphore(32)
    if client == "s3fs":
        import s3fs
        fs = s3fs.S3FileSystem(asynchronous=True, endpoint_url=url, skip_instance_cache=True,
                               config_kwargs={"max_pool_connections": 64})
        await fs.set_session()
        etag = (await fs.s3.head_object(Bucket="bench", Key=key))["ETag"]

        async def get(start):
            async with limit:
                r = await fs.s3.get_object(Bucket="bench", Key=key, Range=f"bytes={start}-{start + size - 1}",
                                           IfMatch=etag)
                async with r["Body"] as body:
                    return await body.read()
    else:
        import obstore
        from obstore.store import S3Store
        store = S3Store("bench", endpoint=url, region="us-east-1", client_options={"allow_http": True},
                        virtual_hosted_style_request=False)
        etag = (await obstore.head_async(store, key))["e_tag"]

        async def get(start):
            async with limit:
                if client == "obstore-one-call":  # no If-Match: get_range takes no options
                    return await obstore.get_range_async(store, key, start=start, end=start + size)
                r = await obstore.get_async(store, key, options={"range": (start, start + size), "if_match": etag})
                return await r.bytes_async()
    await asyncio.gather(*(get(i * 4096) for i in range(n)))

asyncio.run(main())
"""


def run(argv: list[str]) -> tuple[float, str]:
    """CPU seconds (user + sys) of a child process, and its output."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {argv[:4]}")
    return usage.ru_utime + usage.ru_stime, out


async def _own_work(reads: int, hedge: bool) -> float:
    """CPU seconds per read of fficube's read path around a client that answers at once."""
    import asyncio
    import time

    from fficube.sources.base import read_batch
    from fficube.sources.policy import HedgePolicy, IOPolicy
    from fficube.sources.remote import RemoteSource

    class Immediate(RemoteSource):
        async def _range_into(self, path: str, start: int, buf: memoryview, etag: str | None) -> int:
            await asyncio.sleep(0)  # one pass of the event loop, as an answer takes
            return len(buf)

    source = Immediate(32, sizes={"x": 2**30}, etags={"x": '"v1"'},
                          policy=IOPolicy(hedge=HedgePolicy(enabled=hedge)))
    buf = memoryview(bytearray(4096))
    started = time.process_time()
    for _ in range(0, reads, 128):
        await read_batch(source, [("x", 0, buf)] * 128)
    return (time.process_time() - started) / reads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gets", type=int, default=1000)
    parser.add_argument("--size", default="256kB")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--build", action="store_true")
    parser.add_argument("--overhead", action="store_true", help="fficube's own CPU per read, no client")
    parser.add_argument("--n", type=int, default=48)
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--budgets", default="40MB,256MB")
    parser.add_argument("--server", choices=("moto", "nginx"), default="moto",
                        help="moto behind the test proxy, or nginx serving the objects as files")
    args = parser.parse_args()
    if args.overhead:
        import asyncio

        for hedge in (True, False):
            per_read = statistics.median(asyncio.run(_own_work(20_000, hedge)) for _ in range(args.repeat))
            print(f"fficube's own work per read, hedging {'on' if hedge else 'off'}: {1e6 * per_read:.0f} us of CPU "
                  f"(median of {args.repeat}; 20,000 reads in batches of 128)")
        return

    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    from fficube.synthetic import SectorSpec, make_sector
    from fficube.units import parse_size

    with tempfile.TemporaryDirectory() as tmp, (nginx_store if args.server == "nginx" else moto_store)(Path(tmp)) as store:
        if not args.build:
            size = parse_size(args.size)
            blob = Path(tmp) / "blob"
            blob.write_bytes(os.urandom(size + 4096 * args.gets))
            store.put(blob, "blob")
            for name in ("s3fs", "obstore", "obstore-one-call"):
                per_get = []
                for _ in range(args.repeat):
                    idle, _ = run([sys.executable, "-c", CLIENT, store.url, "blob", "1", str(size), name])
                    busy, _ = run([sys.executable, "-c", CLIENT, store.url, "blob", str(args.gets + 1), str(size),
                                   name])
                    per_get.append((busy - idle) / args.gets)
                print(f"{name}: {1000 * statistics.median(per_get):.2f} ms of client CPU per GET of {args.size} "
                      f"(median of {args.repeat}; {args.gets} GETs, 32 in flight; {args.server})")
        else:
            from bench_s3 import child

            paths = make_sector(Path(tmp) / "ffis", SectorSpec(n_ffis=args.n, shape=(args.rows, 2136), no_wcs=()))
            urls = [store.put(Path(path), f"ffi/{Path(path).name}") for path in paths]
            inputs: str | list[str] = "s3://bench/ffi/" if store.lists else urls
            budgets = args.budgets.split(",")
            local = [child([paths, str(Path(tmp) / "c.fits"), budgets[-1], None, {}]) for _ in range(args.repeat)]
            local_cpu = statistics.median(r["user"] + r["sys"] for r in local)
            for name, extra in (("obstore", {}), ("s3fs", {"use_ssl": False})):
                runs: dict[str, list[dict]] = {b: [] for b in budgets}
                for _ in range(args.repeat):
                    for budget in budgets:
                        before = store.requests()
                        run_ = child([inputs, str(Path(tmp) / "c.fits"), budget, None, {"endpoint_url": store.url, **extra}])
                        runs[budget].append({**run_, "wire": store.requests() - before})
                cpu = {b: statistics.median(r["user"] + r["sys"] for r in runs[b]) for b in budgets}
                gets = {b: statistics.median(r["requests"] for r in runs[b]) for b in budgets}
                wire = {b: statistics.median(r["wire"] for r in runs[b]) for b in budgets}
                small, large = budgets[0], budgets[-1]
                print(json.dumps({b: {"gets": gets[b], "on the wire": wire[b], "cpu": round(cpu[b], 2),
                                      "mean GET kB": round(runs[b][0]["bytes_read"] / gets[b] / 1e3)} for b in budgets}))
                print(f"{name}: ({cpu[small]:.2f} - {cpu[large]:.2f}) s / ({gets[small]:.0f} - {gets[large]:.0f}) GETs"
                      f" = {1000 * (cpu[small] - cpu[large]) / (gets[small] - gets[large]):.2f} ms per GET in a build; "
                      f"local files at {large}: {local_cpu:.2f} s; ({args.server}, medians of {args.repeat})")


class _Store:
    """Where the benchmark's objects live: ``url`` (an S3 endpoint), ``put(path, key)``
    (returns the object's s3:// URL), ``requests()`` (requests the server saw so far),
    ``lists`` (whether a prefix can be listed)."""

    def __init__(self, url: str, put, requests, lists: bool) -> None:
        self.url, self.put, self.requests, self.lists = url, put, requests, lists


@contextlib.contextmanager
def moto_store(tmp: Path):
    """moto's S3 server behind the test proxy (keep-alive connections, as S3 has), here."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    import boto3
    from moto.server import ThreadedMotoServer
    from s3_proxy import S3Proxy

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    client = boto3.client("s3", endpoint_url=f"http://{host}:{port}")
    client.create_bucket(Bucket="bench")
    proxy = S3Proxy((host, port))

    def put(path: Path, key: str) -> str:
        client.upload_file(str(path), "bench", key)
        return f"s3://bench/{key}"

    try:
        yield _Store(proxy.url, put, lambda: proxy.state.requests, lists=True)
    finally:
        proxy.close()
        server.stop()


NGINX_CONF = """
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log {dir}/access.log;
    sendfile on;
    keepalive_requests 1000000;
    client_body_temp_path {dir}/body;
    server {{ listen 127.0.0.1:{port}; root {dir}/root; location / {{ }} }}
}}
"""


@contextlib.contextmanager
def nginx_store(tmp: Path):
    """nginx serving the objects as files, in S3's path style (it answers HEAD and ranged
    GETs with If-Match as S3 does, but signs nothing and cannot list): a server that sends
    its answers as a real store does, in large writes straight from the page cache,
    where moto and the proxy are Python and send in small pieces."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(binary):
        raise SystemExit("nginx not found (Debian: apt-get install nginx-light)")
    home = tmp / "nginx"
    (home / "root" / "bench").mkdir(parents=True)
    for directory in (tmp, home, home / "root", home / "root" / "bench"):
        directory.chmod(0o755)  # nginx's workers run as another user when started as root
    with socket.socket() as probe:  # a free port (nginx cannot report the one it was given)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    conf = home / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=home, port=port))
    proc = subprocess.Popen([binary, "-c", str(conf), "-p", str(home), "-g", "daemon off;"])
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)

    def put(path: Path, key: str) -> str:
        target = home / "root" / "bench" / key
        target.parent.mkdir(mode=0o755, exist_ok=True)
        shutil.copyfile(path, target)
        target.chmod(0o644)
        return f"s3://bench/{key}"

    def requests() -> int:
        log = home / "access.log"
        return sum(1 for _ in log.open()) if log.exists() else 0

    try:
        yield _Store(f"http://127.0.0.1:{port}", put, requests, lists=False)
    finally:
        proc.terminate()
        proc.wait()

if __name__ == "__main__":
    main()
