"""The processes of a torchrun job, passed explicitly: rank, world size and the collectives the engine uses.

``Distributed()`` (``ONE_PROCESS``) is one process: every collective is an identity and nothing of
torch.distributed is touched, so code written for N processes runs unchanged in one. Under torchrun
each process builds its own from the environment torchrun sets (``from_environment``); nccl on
CUDA, gloo on CPU. Training (training/distributed.py) and batch labelling (labelling/batch.py) use it.
Besides collectives, which every rank must enter, it keeps torchrun's key-value store: flags any rank
raises and every rank can look up on its own (``raise_flag``, ``flag_raised``), and a barrier that
keeps polling while it waits (``wait_for_all``), for ranks doing different amounts of work.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
from torch import Tensor

CLOSE_WAIT_SECONDS = 60.0   # how long rank 0 waits at close for the other ranks to sign off


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    group: Any = None
    device: torch.device = torch.device("cpu")   # where collectives run: the rank's GPU for nccl
    store: Any = None   # torchrun's key-value store (under this engine's prefix); None in one process

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls, environ: Mapping[str, str], cuda: bool) -> "Distributed":
        """The job torchrun describes in ``environ`` (one process when it describes none); nccl on CUDA, gloo on CPU."""
        if "WORLD_SIZE" not in environ or int(environ["WORLD_SIZE"]) < 2:
            return cls()
        import torch.distributed as dist

        rank, world, local_rank = int(environ["RANK"]), int(environ["WORLD_SIZE"]), int(environ.get("LOCAL_RANK", "0"))
        device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
        if cuda:
            torch.cuda.set_device(device)
        # The rendezvous init_process_group would do itself, keeping its store for the flags below.
        store, _, _ = next(dist.rendezvous("env://", rank, world))
        dist.init_process_group("nccl" if cuda else "gloo", store=dist.PrefixStore("default_pg", store), rank=rank, world_size=world)
        return cls(rank, world, local_rank, int(environ.get("LOCAL_WORLD_SIZE", world)), dist.group.WORLD, device,
                   dist.PrefixStore("sembridge/", store))

    def close(self) -> None:
        """Leave the job. Rank 0 hosts the key-value store the other ranks talk to; tearing its server
        down while another rank is still connected aborted rank 0 at exit ("terminate called without an
        active exception"), so every rank signs off in the store and rank 0 leaves last."""
        if self.enabled:
            import torch.distributed as dist

            self.store.add("left", 1)
            deadline = time.monotonic() + CLOSE_WAIT_SECONDS   # a rank that died never signs off: do not hang at exit
            while self.is_main and self.store.add("left", 0) < self.world_size and time.monotonic() < deadline:
                time.sleep(0.05)
            dist.destroy_process_group(self.group)

    # -- the store: no collective, so ranks need not be at the same point ---------------------------
    def raise_flag(self, name: str) -> None:
        """Flag ``name`` for every rank of the job (one process: nobody else to tell)."""
        if self.enabled:
            self.store.set(f"flag/{name}", "1")

    def flag_raised(self, name: str) -> bool:
        """Whether any rank raised flag ``name`` (a quick look-up in the store, no waiting)."""
        return self.enabled and bool(self.store.check([f"flag/{name}"]))

    def wait_for_all(self, name: str, poll: Callable[[], object], seconds: float = 0.2) -> None:
        """Wait until every rank reached this point ``name``, calling ``poll`` every ``seconds`` meanwhile: a rank
        that finished its share keeps handling what it sees (a cancel to pass on) instead of blocking in a
        collective, where Python's signal handlers do not run."""
        if not self.enabled:
            return
        key = f"arrived/{name}"
        self.store.add(key, 1)
        while self.store.add(key, 0) < self.world_size:
            poll()
            time.sleep(seconds)

    # -- sharding ---------------------------------------------------------------------------------
    def part(self, count: int) -> slice:
        """This rank's contiguous share of ``count`` items."""
        return slice(self.rank * count // self.world_size, (self.rank + 1) * count // self.world_size)

    def weight(self, count: int) -> float:
        """Loss weight of this rank's share of a batch of ``count``: DDP's average then equals the batch mean."""
        part = self.part(count)
        return (part.stop - part.start) * self.world_size / count

    # -- collectives --------------------------------------------------------------------------------
    def sum(self, values: Tensor) -> Tensor:
        """Elementwise sum over ranks (a new tensor)."""
        if not self.enabled:
            return values
        import torch.distributed as dist

        buffer = values.detach().to(self.device, copy=True)
        dist.all_reduce(buffer, group=self.group)
        return buffer.to(values.device)

    def any(self, flag: bool) -> bool:
        return flag if not self.enabled else bool(self.sum(torch.tensor([float(flag)])).item() > 0)

    def all(self, flag: bool) -> bool:
        return flag if not self.enabled else not self.any(not flag)

    def broadcast(self, tensor: Tensor) -> Tensor:
        """Rank 0's tensor on every rank (same shape and dtype on every rank)."""
        if not self.enabled:
            return tensor
        import torch.distributed as dist

        buffer = tensor.detach().to(self.device, copy=True).contiguous()
        dist.broadcast(buffer, src=0, group=self.group)
        return buffer.to(tensor.device)

    def broadcast_json(self, value: Any) -> Any:
        """Rank 0's JSON-able value on every rank (JSON, not pickle: nothing received is executed)."""
        if not self.enabled:
            return value
        data = json.dumps(value).encode() if self.is_main else b""
        length = int(self.broadcast(torch.tensor([len(data)])).item())
        payload = torch.frombuffer(bytearray(data.ljust(length, b"\0")), dtype=torch.uint8) if length else torch.empty(0, dtype=torch.uint8)
        return json.loads(bytes(self.broadcast(payload).tolist()).decode())

    def agree(self, compute: Callable[[], Any]) -> Any:
        """Rank 0 computes (a folder check, a cache lookup); every rank gets its JSON-able result or its error."""
        if not self.enabled:
            return compute()
        error: Exception | None = None
        outcome: dict[str, Any] = {}
        if self.is_main:
            try:
                outcome = {"value": compute()}
            except (ValueError, OSError, RuntimeError) as caught:
                error, outcome = caught, {"error": str(caught)}
        outcome = self.broadcast_json(outcome)
        if "error" in outcome:
            raise error if error is not None else RuntimeError(outcome["error"])
        return outcome["value"]

    def row_counts(self, rows: int) -> list[int]:
        """Every rank's ``rows``, in rank order."""
        if not self.enabled:
            return [rows]
        return [int(value) for value in self.sum(torch.nn.functional.one_hot(torch.tensor(self.rank), self.world_size) * rows).tolist()]

    def gather_rows(self, tensor: Tensor, counts: list[int] | None = None) -> Tensor:
        """Every rank's rows, in rank order (row counts may differ by rank; ``counts`` if already known)."""
        if not self.enabled:
            return tensor
        import torch.distributed as dist

        counts = counts or self.row_counts(tensor.shape[0])
        padded = torch.zeros((max(counts), *tensor.shape[1:]), dtype=tensor.dtype, device=self.device)
        padded[:tensor.shape[0]] = tensor.detach()
        pieces = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(pieces, padded, group=self.group)
        return torch.cat([piece[:count] for piece, count in zip(pieces, counts)]).to(tensor.device)

    def gather_rows_with_grad(self, tensor: Tensor) -> Tensor:
        """``gather_rows`` through which gradients flow back to each rank's own rows."""
        return _GatherRows.apply(tensor, self) if self.enabled else tensor

    def sum_with_grad(self, tensor: Tensor) -> Tensor:
        """``sum`` through which gradients flow: each rank's part gets the sum of every rank's gradient."""
        return _SumOverRanks.apply(tensor, self) if self.enabled else tensor

    def gather_json(self, value: Any) -> list:
        """Every rank's JSON-able value, in rank order, on every rank."""
        if not self.enabled:
            return [value]
        data = torch.frombuffer(bytearray(json.dumps(value).encode()), dtype=torch.uint8)
        counts = self.row_counts(len(data))
        joined = bytes(self.gather_rows(data, counts).tolist())
        offsets = [sum(counts[:rank]) for rank in range(self.world_size + 1)]
        return [json.loads(joined[offsets[rank]:offsets[rank + 1]].decode()) for rank in range(self.world_size)]


ONE_PROCESS = Distributed()


class _GatherRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: Tensor, dist: Distributed) -> Tensor:
        counts = dist.row_counts(tensor.shape[0])
        ctx.dist, ctx.start, ctx.rows = dist, sum(counts[:dist.rank]), tensor.shape[0]
        return dist.gather_rows(tensor, counts)

    @staticmethod
    def backward(ctx, grad: Tensor):
        # Every rank's loss used every row: a row's gradient is the sum of all ranks' gradients for it.
        total = ctx.dist.sum(grad.contiguous())
        return total[ctx.start:ctx.start + ctx.rows], None


class _SumOverRanks(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: Tensor, dist: Distributed) -> Tensor:
        ctx.dist = dist
        return dist.sum(tensor)

    @staticmethod
    def backward(ctx, grad: Tensor):
        # d(sum over ranks)/d(own part) is 1 for every rank's loss: the gradient is the sum of theirs.
        return ctx.dist.sum(grad.contiguous()), None
