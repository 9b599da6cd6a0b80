"""Multi-process training runs on a machine without a GPU, for the tests (CI has no GPU).

DeepSpeed itself runs on CPU (its CPU accelerator, with gloo), but Accelerate only enters a
multi-process run when the launch found a GPU (or was told `cpu`, which rules DeepSpeed out), so a
2-process DeepSpeed launch on CPU would believe it is alone. :func:`allow_deepspeed_on_cpu` makes
Accelerate's backend choice what it is for a multi-process CPU run (gloo), in this process only; the
code under test is the pipeline's, unchanged. Call it before any Accelerator is made.
:func:`die_after_checkpoints` stops a run as a kill would, for the resume tests.
"""
import os


def allow_deepspeed_on_cpu() -> None:
    import torch

    from searchr2.distributed import deepspeed_launch

    if torch.cuda.is_available() or not deepspeed_launch():
        return
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    choose = PartialState._prepare_backend

    def on_cpu(self, cpu=False, sagemaker_dp=False, backend=None):
        backend, kind = choose(self, cpu, sagemaker_dp, backend)
        if kind == DistributedType.NO and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            return "gloo", DistributedType.MULTI_CPU
        return backend, kind

    PartialState._prepare_backend = on_cpu


KILLED = 75   # exit code of a process stopped by die_after_checkpoints


def die_after_checkpoints(trainer_module, n: int) -> None:
    """Make every process exit (code :data:`KILLED`) right after the ``n``-th checkpoint the trainer
    module (``searchr2.sft`` or ``searchr2.rl``) writes, as a run killed there would."""
    import torch.distributed as dist

    original, saved = trainer_module.save_checkpoint, []

    def save_then_die(accelerator, root, progress):
        path = original(accelerator, root, progress)
        saved.append(progress["step"])
        if len(saved) == n:
            dist.barrier()                    # every process has its part on disk
            os._exit(KILLED)
        return path

    trainer_module.save_checkpoint = save_then_die
