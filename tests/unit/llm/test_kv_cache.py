"""The block pool and prefix caching, without a model."""

from __future__ import annotations

from trident.backends.llm.engine import SamplingParams
from trident.backends.llm.engine.kv_cache import BlockPool, KVCacheManager, hash_block
from trident.backends.llm.engine.request import Request


def req(tokens: list[int], rid: str = "r") -> Request:
    return Request(rid, tokens, SamplingParams())


def compute(kv: KVCacheManager, r: Request, n: int) -> None:
    assert kv.allocate_slots(r, n)
    r.num_computed_tokens += n
    kv.cache_full_blocks(r)


def test_hash_chains_through_the_parent() -> None:
    a = hash_block(b"", [1, 2, 3, 4])
    assert hash_block(b"", [1, 2, 3, 4]) == a
    assert hash_block(a, [5, 6]) != hash_block(hash_block(b"", [0, 2, 3, 4]), [5, 6])


def test_allocation_is_all_or_nothing_and_never_over_ceil() -> None:
    kv = KVCacheManager(num_blocks=4, block_size=4, enable_prefix_caching=False)
    r = req(list(range(10)))
    assert not kv.allocate_slots(r, 17)  # 5 blocks > 4
    assert r.block_ids == [] and kv.pool.num_free == 4
    compute(kv, r, 10)
    assert len(r.block_ids) == 3  # ceil(10 / 4)
    r.token_ids.append(99)
    compute(kv, r, 1)
    assert len(r.block_ids) == 3  # slot 11 still fits in the third block
    kv.free(r)
    assert kv.pool.num_free == 4 and all(c == 0 for c in kv.pool.ref_counts)


def test_a_repeated_prompt_hits_its_full_blocks_but_computes_the_last_token() -> None:
    kv = KVCacheManager(num_blocks=16, block_size=4, enable_prefix_caching=True)
    first = req(list(range(12)), "a")
    compute(kv, first, 12)
    kv.free(first)
    again = req(list(range(12)), "b")
    blocks, hit = kv.get_computed_blocks(again)
    assert hit == 8  # 3 full blocks, but the 12th token must be computed for its logits
    assert blocks == first.block_ids[:2] or len(blocks) == 2
    again.num_computed_tokens = hit
    assert kv.allocate_slots(again, 4, blocks)
    assert again.block_ids[:2] == blocks and len(again.block_ids) == 3


def test_shared_prefix_blocks_are_shared_and_reference_counted() -> None:
    kv = KVCacheManager(num_blocks=16, block_size=4, enable_prefix_caching=True)
    a = req(list(range(9)), "a")
    compute(kv, a, 9)
    b = req([*range(8), 42, 43], "b")
    blocks, hit = kv.get_computed_blocks(b)
    assert hit == 8 and blocks == a.block_ids[:2]
    b.num_computed_tokens = hit
    assert kv.allocate_slots(b, 2, blocks)
    assert [kv.pool.ref_counts[x] for x in blocks] == [2, 2]
    kv.free(a)
    assert [kv.pool.ref_counts[x] for x in blocks] == [1, 1]
    kv.free(b)
    assert kv.pool.num_free == 16


def test_a_different_earlier_block_breaks_the_chain() -> None:
    kv = KVCacheManager(num_blocks=16, block_size=4, enable_prefix_caching=True)
    a = req(list(range(12)), "a")
    compute(kv, a, 12)
    b = req([100, *range(1, 12)], "b")  # the same second block after a different first one
    assert kv.get_computed_blocks(b) == ([], 0)
    kv.free(a)


def test_eviction_takes_uncached_then_least_recent_blocks_and_forgets_their_hash() -> None:
    pool = BlockPool(4)
    blocks = pool.allocate(4)
    pool.register(blocks[0], b"h0")
    pool.register(blocks[1], b"h1")
    pool.release(blocks)  # deepest first; uncached blocks go to the front
    again = pool.allocate(2)
    assert set(again) == {blocks[2], blocks[3]}
    assert pool.lookup(b"h0") == blocks[0]
    third = pool.allocate(1)
    assert third == [blocks[1]]  # h1 (the deeper cached block) is evicted before h0
    assert pool.lookup(b"h1") is None and pool.lookup(b"h0") == blocks[0]


def test_a_hit_block_waiting_in_the_free_queue_is_not_counted_twice() -> None:
    kv = KVCacheManager(num_blocks=3, block_size=4, enable_prefix_caching=True)
    a = req(list(range(8)), "a")
    compute(kv, a, 8)
    kv.free(a)  # both blocks cached but free
    b = req([*range(8), 1, 2, 3, 4, 5], "b")
    blocks, hit = kv.get_computed_blocks(b)
    assert hit == 8
    b.num_computed_tokens = hit
    # 13 tokens need 4 blocks: 2 hits + 2 new, but only 1 block is free besides the hits.
    assert not kv.allocate_slots(b, 5, blocks)
    assert kv.pool.num_free == 3
