"""A Spark standalone cluster as local processes: one master and N workers on 127.0.0.1, from the jars pyspark ships.

    free ports -> Master (spark-class) -> ready on its REST/JSON UI -> Workers -> all registered with the master

It exists so the same job that runs in ``local[2]`` can be run (by tests, by ``pipeline bench --spark-master``) on a
real cluster manager: executors in their own JVMs, started by workers, reading Kafka themselves. Heaps are capped,
the machines this runs on have two cores.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
import urllib.request
from pathlib import Path

from pipeline.services import procs

DAEMON_HEAP = "256m"  # SPARK_DAEMON_MEMORY of the master and of each worker (not the executors)


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent


def spark_submit() -> Path:
    return spark_home() / "bin" / "spark-submit"


@dataclasses.dataclass
class Cluster:
    master_url: str  # spark://127.0.0.1:PORT
    ui_port: int
    work_dir: Path  # each worker's executors write their logs under work_dir/worker-N/app-*/
    pids: list[int]

    def state(self) -> dict:
        """The master's JSON view: workers, running and completed applications."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ui_port}/json/", timeout=5) as answer:
            return json.load(answer)

    def executor_dirs(self) -> dict[str, list[Path]]:
        """Per worker, the executor directories its applications got (app-*/<executor id>)."""
        return {worker.name: sorted(worker.glob("app-*/*"))
                for worker in sorted(self.work_dir.glob("worker-*")) if worker.is_dir()}

    def stop(self) -> None:
        """Workers first, then the master; one that will not stop does not keep the others running."""
        failed = []
        for pid in reversed(self.pids):
            try:
                procs.stop(pid)
            except Exception as exc:  # noqa: BLE001 - reported after the others are stopped
                failed.append(f"{pid}: {exc}")
        self.pids.clear()
        if failed:
            raise RuntimeError(f"Spark cluster processes would not stop: {'; '.join(failed)}")


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(SPARK_HOME=str(spark_home()), SPARK_DAEMON_MEMORY=DAEMON_HEAP, SPARK_NO_DAEMONIZE="1",
               PYSPARK_PYTHON=env.get("PYSPARK_PYTHON", sys.executable))
    env.update(extra or {})
    return env


def start(work_dir: Path, workers: int = 2, cores: int = 1, memory: str = "768m", timeout_s: float = 120) -> Cluster:
    """Start a master and ``workers`` workers of ``cores`` cores and ``memory`` for executors each."""
    spark_class = str(spark_home() / "bin" / "spark-class")
    work_dir.mkdir(parents=True, exist_ok=True)
    port, ui_port = procs.free_port(), procs.free_port()
    cluster = Cluster(f"spark://127.0.0.1:{port}", ui_port, work_dir, [])
    env = _env({"SPARK_LOCAL_IP": "127.0.0.1"})
    master_log = work_dir / "master.log"
    pid = procs.spawn([spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                       "--port", str(port), "--webui-port", str(ui_port)], master_log, env)
    cluster.pids.append(pid)
    try:
        procs.wait_for(lambda: cluster.state().get("status") == "ALIVE", pid=pid, what="Spark master",
                       log_path=master_log, timeout_s=timeout_s)
        for n in range(workers):
            directory = work_dir / f"worker-{n}"
            directory.mkdir(exist_ok=True)
            log_path = work_dir / f"worker-{n}.log"
            worker = procs.spawn([spark_class, "org.apache.spark.deploy.worker.Worker", cluster.master_url,
                                  "--host", "127.0.0.1", "--cores", str(cores), "--memory", memory,
                                  "--work-dir", str(directory), "--webui-port", str(procs.free_port())],
                                 log_path, env)
            cluster.pids.append(worker)
            procs.wait_for(functools.partial(_registered, cluster, n + 1), pid=worker, what=f"Spark worker {n}",
                           log_path=log_path, timeout_s=timeout_s)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _registered(cluster: Cluster, workers: int) -> bool:
    return sum(1 for w in cluster.state().get("workers", []) if w.get("state") == "ALIVE") >= workers
