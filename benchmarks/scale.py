"""Full-size extraction: the whole VGG16 neuron graph (224x224, with top: 15 G edges) on this machine,
and a ~1 G-edge job (VGG16 64x64, no top) on 1 and N local workers and on a Dask LocalCluster.

    python benchmarks/scale.py [--skip-full] [--out-dir DIR]

Reports null-sink (count + checksum) and Parquet time, edges/s, bytes on disk and bytes/edge, and
the peak RSS of the whole job: this process plus its children (workers, and the short-lived child
that builds the model: its kernel-reported peak plus this process's RSS, an upper bound).
Everything written is removed at the end. Not a test: machines are noisy.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import psutil


class PeakRss:
    """Peak summed RSS of this process and its children, sampled in a thread."""

    def __init__(self, interval: float = 0.2):
        self.interval, self.peak = interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        me = psutil.Process()
        total = me.memory_info().rss
        for child in me.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def timed_extract(graph, out, **kwargs) -> tuple[object, int]:
    from pipeline.extract import extract

    with PeakRss() as rss:
        res = extract(graph, out, **kwargs)
    return res, rss.peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-full", action="store_true", help="Only the ~1 G-edge comparisons.")
    ap.add_argument("--out-dir", default=None, help="Where to write Parquet (default: a temporary folder).")
    args = ap.parse_args()

    import resource

    from pipeline.extract.executors import DaskExecutor, default_workers
    from pipeline.model import ModelSpec
    from pipeline.model_store import isolated_graph
    from pipeline.plan import plan

    cores = default_workers()
    tmp = Path(tempfile.mkdtemp(prefix="cnngraph-scale-", dir=args.out_dir))
    print(f"cores: {cores}; output under {tmp}", flush=True)
    full = {}
    try:
        if not args.skip_full:
            t0 = time.perf_counter()
            sampled = PeakRss(interval=0.02).__enter__()
            with isolated_graph(ModelSpec("vgg16")) as graph:
                sampled.__exit__()
                build_s = time.perf_counter() - t0
                child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
                build_rss = max(sampled.peak, child_rss + psutil.Process().memory_info().rss)
                full["build"] = build_rss
                p = plan(graph)
                print(f"vgg16 224x224 with top: {p.nodes:,} nodes, {p.edges:,} edges; plan: parquet ~{p.bytes['parquet'] / 1e9:.1f} GB; "
                      f"built in a child in {build_s:.1f} s (child peak RSS {child_rss / 1e6:.0f} MB, "
                      f"with this process {build_rss / 1e6:.0f} MB)", flush=True)
                res, rss = timed_extract(graph, None, workers=cores)
                full["null"] = (res.seconds, res.edges, rss)
                print(f"null sink: {res.edges:,} edges in {res.seconds:.1f} s = {res.edges_per_second / 1e6:.1f} M edges/s, "
                      f"peak RSS {rss / 1e6:.0f} MB", flush=True)
                res, rss = timed_extract(graph, tmp / "full", workers=cores)
                size = du(tmp / "full")
                full["parquet"] = (res.seconds, res.edges, rss, size)
                print(f"parquet: {res.seconds:.1f} s = {res.edges_per_second / 1e6:.1f} M edges/s, {size / 1e9:.2f} GB on disk "
                      f"({size / res.edges:.3f} bytes/edge; plan estimate {p.bytes['parquet'] / 1e9:.1f} GB), peak RSS {rss / 1e6:.0f} MB", flush=True)
                shutil.rmtree(tmp / "full", ignore_errors=True)

        with isolated_graph(ModelSpec("vgg16", (64, 64, 3), include_top=False)) as graph:
            edges = plan(graph).edges
            print(f"vgg16 64x64 no top: {edges:,} edges", flush=True)
            rates = {}
            for workers in sorted({1, cores}):
                res, rss = timed_extract(graph, None, workers=workers)
                print(f"  null, local {workers} worker(s): {res.seconds:.1f} s ({res.edges_per_second / 1e6:.1f} M edges/s), peak RSS {rss / 1e6:.0f} MB", flush=True)
                res, rss = timed_extract(graph, tmp / f"local{workers}", workers=workers)
                rates[f"local{workers}"] = res
                print(f"  parquet, local {workers} worker(s): {res.seconds:.1f} s ({res.edges_per_second / 1e6:.1f} M edges/s), peak RSS {rss / 1e6:.0f} MB", flush=True)
            from distributed import Client, LocalCluster

            with LocalCluster(n_workers=cores, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, Client(cluster) as client:
                res, rss = timed_extract(graph, tmp / "dask", executor=DaskExecutor(client))
                rates["dask"] = res
                print(f"  parquet, dask LocalCluster {cores} workers: {res.seconds:.1f} s ({res.edges_per_second / 1e6:.1f} M edges/s)", flush=True)
            local = rates[f"local{cores}"].manifest["layers"]
            same = [(e["edge_checksum"], e["edge_file_sha256"]) for e in local] == [
                (e["edge_checksum"], e["edge_file_sha256"]) for e in rates["dask"].manifest["layers"]]
            print(f"  dask output identical to local (checksums and file sha256): {same}", flush=True)
            ratio = rates["dask"].seconds / rates[f"local{cores}"].seconds
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    if full:
        ns, ne, nr = full["null"]
        ps, pe, pr, size = full["parquet"]
        print(f"scale: vgg16 full null {ns:.0f} s ({ne / ns / 1e6:.0f} M edges/s); parquet {ps:.0f} s ({pe / ps / 1e6:.0f} M edges/s, "
              f"{size / 1e9:.1f} GB, {size / pe:.2f} bytes/edge); peak RSS {max(nr, pr, full['build']) / 1e6:.0f} MB; dask/local {ratio:.1f}x")
    else:
        print(f"scale: dask/local {ratio:.1f}x")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()
