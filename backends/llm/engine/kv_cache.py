"""The paged KV cache's bookkeeping: a pool of fixed-size blocks, a block table per request, and
prefix caching of full blocks (vLLM's V1 design).

- Every block is created up front. Free blocks wait in an LRU queue (an ordered dict: O(1) pop,
  move and remove); a block keeps its cached content while it waits, until it is reused.
- A full block's hash chains through its parent's: blake2b(parent hash, token ids). Equal
  hashes mean equal prefixes, so a new request whose prompt starts with cached blocks takes them
  (ref count + 1) instead of computing them again. Only full blocks are cached.
- Freeing a request pushes its blocks in reverse order, so a shared prefix outlives its tails;
  blocks that hold no cached content go to the front, to be reused first.
- `allocate_slots` is all or nothing, so the scheduler can preempt and retry.
The tensors themselves live in the model runner; this module only hands out block ids.
"""

from __future__ import annotations

import array
import hashlib
from collections import OrderedDict
from collections.abc import Sequence

from trident.backends.llm.engine.request import Request


def hash_block(parent: bytes, token_ids: Sequence[int]) -> bytes:
    """The hash of a full block given its parent block's hash (b"" for the first block).

    A cryptographic hash, so a client cannot craft a prompt whose blocks collide with another
    client's cached prefix."""
    h = hashlib.blake2b(parent, digest_size=16)
    h.update(array.array("q", token_ids).tobytes())
    return h.digest()


class BlockPool:
    """Block ids 0..num_blocks-1 with reference counts, an LRU free queue and the hash map."""

    def __init__(self, num_blocks: int) -> None:
        self.num_blocks = num_blocks
        self.ref_counts = [0] * num_blocks
        self.block_hash: list[bytes | None] = [None] * num_blocks
        self.free_queue: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))
        self.cached: dict[bytes, int] = {}

    @property
    def num_free(self) -> int:
        return len(self.free_queue)

    @property
    def num_used(self) -> int:
        return self.num_blocks - len(self.free_queue)

    def allocate(self, n: int) -> list[int]:
        """n fresh blocks from the head of the free queue, evicting their cached content."""
        if n > len(self.free_queue):
            raise RuntimeError("allocate() beyond the free blocks; check num_free first")
        out = []
        for _ in range(n):
            block, _ = self.free_queue.popitem(last=False)
            old = self.block_hash[block]
            if old is not None:
                if self.cached.get(old) == block:
                    del self.cached[old]
                self.block_hash[block] = None
            self.ref_counts[block] = 1
            out.append(block)
        return out

    def touch(self, blocks: Sequence[int]) -> None:
        """Take a reference on cached blocks (a prefix-cache hit)."""
        for block in blocks:
            if self.ref_counts[block] == 0:
                del self.free_queue[block]
            self.ref_counts[block] += 1

    def release(self, blocks: Sequence[int]) -> None:
        """Drop a reference on each block, deepest first; unreferenced blocks become free."""
        for block in reversed(blocks):
            self.ref_counts[block] -= 1
            if self.ref_counts[block] == 0:
                self.free_queue[block] = None
                if self.block_hash[block] is None:
                    self.free_queue.move_to_end(block, last=False)

    def register(self, block: int, block_hash: bytes) -> None:
        """Record a full block's content hash; a duplicate of a cached block stays unregistered
        (block tables are append-only, so duplicates are harmless)."""
        if block_hash not in self.cached:
            self.cached[block_hash] = block
            self.block_hash[block] = block_hash

    def lookup(self, block_hash: bytes) -> int | None:
        return self.cached.get(block_hash)


class KVCacheManager:
    """Block tables of requests over one BlockPool."""

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool) -> None:
        self.pool = BlockPool(num_blocks)
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.prefix_queries = 0  # prompt tokens looked up
        self.prefix_hits = 0  # of which found in the cache

    @property
    def num_blocks(self) -> int:
        return self.pool.num_blocks

    def usage(self) -> float:
        """Fraction of blocks held by requests."""
        return self.pool.num_used / self.pool.num_blocks

    def _extend_hashes(self, request: Request, num_full_blocks: int) -> None:
        bs = self.block_size
        hashes = request.block_hashes
        tokens = request.token_ids
        while len(hashes) < num_full_blocks:
            i = len(hashes)
            parent = hashes[-1] if hashes else b""
            hashes.append(hash_block(parent, tokens[i * bs : (i + 1) * bs]))

    def get_computed_blocks(self, request: Request) -> tuple[list[int], int]:
        """Cached blocks that hold the longest prefix of the request's tokens, and how many
        tokens they cover. At least one token is always left to compute (it yields the logits)."""
        if not self.enable_prefix_caching:
            return [], 0
        max_blocks = (request.num_tokens - 1) // self.block_size
        self._extend_hashes(request, max_blocks)
        blocks: list[int] = []
        for h in request.block_hashes[:max_blocks]:
            block = self.pool.lookup(h)
            if block is None:
                break
            blocks.append(block)
        return blocks, len(blocks) * self.block_size

    def record_prefix_lookup(self, num_tokens: int, num_hit_tokens: int) -> None:
        """Count one admitted request's prefix-cache lookup (in tokens)."""
        self.prefix_queries += num_tokens
        self.prefix_hits += num_hit_tokens

    def allocate_slots(
        self, request: Request, num_new_tokens: int, computed_blocks: Sequence[int] = ()
    ) -> bool:
        """Give `request` blocks for `num_new_tokens` more tokens (after its computed tokens and
        `computed_blocks`, a prefix-cache hit taken with it). All or nothing."""
        bs = self.block_size
        held = len(request.block_ids) + len(computed_blocks)
        computed = max(request.num_computed_tokens, len(computed_blocks) * bs)
        needed = -(-(computed + num_new_tokens) // bs) - held
        # Cache hits sitting in the free queue stop being free once touched.
        hits_in_free = sum(1 for b in computed_blocks if self.pool.ref_counts[b] == 0)
        if needed > self.pool.num_free - hits_in_free:
            return False
        if computed_blocks:
            self.pool.touch(computed_blocks)
            request.block_ids.extend(computed_blocks)
            request.num_cached_blocks = len(request.block_ids)
        if needed > 0:
            request.block_ids.extend(self.pool.allocate(needed))
        return True

    def cache_full_blocks(self, request: Request) -> None:
        """Register the request's newly completed full blocks in the prefix cache."""
        if not self.enable_prefix_caching:
            return
        full = request.num_computed_tokens // self.block_size
        if full <= request.num_cached_blocks:
            return
        self._extend_hashes(request, full)
        for i in range(request.num_cached_blocks, full):
            self.pool.register(request.block_ids[i], request.block_hashes[i])
        request.num_cached_blocks = full

    def free(self, request: Request) -> None:
        """Return the request's blocks to the pool (cached content stays reusable)."""
        self.pool.release(request.block_ids)
        request.block_ids = []
        request.num_cached_blocks = 0

    def reset_request(self, request: Request) -> None:
        """Preemption: drop the blocks; the hashes of full blocks stay valid (same tokens)."""
        self.free(request)
        request.num_computed_tokens = 0
