"""A KV-cache event publisher built the way the engines build theirs.

The engines cannot run here (they need GPUs), so this is the next best
thing: their event types, copied field for field from the engines' own
sources, serialized with msgspec as the engines do and published with
pyzmq (libzmq) on a PUB socket as three frames [topic, seq, payload], like
their ZmqEventPublisher.

Sources of the types (tags spelled out: msgspec's default tag is the
qualified class name, which for the engines' top-level classes is the
bare name):
- vllm/distributed/kv_events.py, vLLM main (2025-2026): named encoding
  (structs without array_like), EventBatch with data_parallel_rank;
- the same file in vLLM 0.10/0.11: array_like, BlockStored with medium and
  lora_name, optional extra_keys/group_idx trailing fields;
- vLLM 0.8/0.9 and SGLang 0.4 (python/sglang/srt/disaggregation/kv_events.py):
  array_like, BlockStored up to lora_id, EventBatch [ts, events];
- SGLang 0.5: array_like, optional medium, EventBatch with attn_dp_rank.

Protocol, one JSON object per stdin line, one answer line on stdout:
  {"publish": {...}}  -> "ok" once sent
      encoding: vllm | vllm-array | vllm-0.8 | sglang | sglang-0.4
      topic, seq (default: the next number), ts, dp_rank,
      events: [{"type": "BlockStored", ...fields...} | {"raw": <value>}]
      block hashes: integers, or {"bytes": "<hex>"}
  {"frames": ["<hex>", ...]} -> "ok": sends exactly these frames
  {"std_hash": [token ids]} -> the standardized hash, computed here with
      hashlib, independently of the code under test
      "drop": true -> numbered and kept in the replay buffer, but not sent
      on the PUB socket: a message the live stream lost
  {"frames": ["<hex>", ...]} -> "ok": sends exactly these frames
The first line printed is "port <n>": where the PUB socket is bound (the
port given as the first argument, else a free one).

With "--replay <buffer_steps>", the replay side of vLLM's ZmqEventPublisher
(vllm/distributed/kv_events.py) as well, and a second line "replay <n>":
a ROUTER socket keeps the last buffer_steps (seq, payload) pairs and
answers a request [identity, "", start (8 bytes big-endian)] (exactly
three frames, else ignored) with [identity, "", seq, payload] for every
buffered seq >= start, then [identity, "", (-1) signed 8 bytes, ""].
vLLM serves it from its publisher thread between two sends; here a thread
of its own serves it, and a batch enters the buffer before it is sent,
under a lock, so a request never sees a batch sent but not yet buffered,
as in vLLM, where the one thread does both.
"""

import hashlib
import itertools
import json
import sys
import threading
import time
from collections import deque
from typing import Any, Optional, Union

import msgspec
import zmq

ExternalBlockHash = Union[bytes, int]


class vllm:
    """vLLM main: named fields, "type" tag."""

    class EventBatch(msgspec.Struct, omit_defaults=True, gc=False):
        ts: float
        events: list[Any]
        data_parallel_rank: Optional[int] = None

    class KVCacheEvent(msgspec.Struct, omit_defaults=True, gc=False, tag=True):
        pass

    class BlockStored(KVCacheEvent, tag="BlockStored"):
        block_hashes: list[ExternalBlockHash]
        parent_block_hash: Optional[ExternalBlockHash]
        token_ids: list[int]
        block_size: int
        lora_id: Optional[int]
        medium: Optional[str]
        lora_name: Optional[str]
        extra_keys: Optional[list[Optional[tuple[Any, ...]]]] = None
        group_idx: Optional[int] = None
        kv_cache_spec_kind: Optional[str] = None
        kv_cache_spec_sliding_window: Optional[int] = None

    class BlockRemoved(KVCacheEvent, tag="BlockRemoved"):
        block_hashes: list[ExternalBlockHash]
        medium: Optional[str]
        group_idx: Optional[int] = None

    class AllBlocksCleared(KVCacheEvent, tag="AllBlocksCleared"):
        pass


class vllm_array:
    """vLLM 0.10/0.11: positional, tagged."""

    class EventBatch(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):
        ts: float
        events: list[Any]
        data_parallel_rank: Optional[int] = None

    class KVCacheEvent(msgspec.Struct, array_like=True, omit_defaults=True, gc=False, tag=True):
        pass

    class BlockStored(KVCacheEvent, tag="BlockStored"):
        block_hashes: list[ExternalBlockHash]
        parent_block_hash: Optional[ExternalBlockHash]
        token_ids: list[int]
        block_size: int
        lora_id: Optional[int]
        medium: Optional[str]
        lora_name: Optional[str]
        extra_keys: Optional[list[Optional[tuple[Any, ...]]]] = None
        group_idx: Optional[int] = None

    class BlockRemoved(KVCacheEvent, tag="BlockRemoved"):
        block_hashes: list[ExternalBlockHash]
        medium: Optional[str]
        group_idx: Optional[int] = None

    class AllBlocksCleared(KVCacheEvent, tag="AllBlocksCleared"):
        pass


class vllm_08:
    """vLLM 0.8/0.9 and SGLang 0.4: positional, the first fields only."""

    class EventBatch(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):
        ts: float
        events: list[Any]

    class KVCacheEvent(msgspec.Struct, array_like=True, omit_defaults=True, gc=False, tag=True):
        pass

    class BlockStored(KVCacheEvent, tag="BlockStored"):
        block_hashes: list[int]
        parent_block_hash: Optional[int]
        token_ids: list[int]
        block_size: int
        lora_id: Optional[int]

    class BlockRemoved(KVCacheEvent, tag="BlockRemoved"):
        block_hashes: list[int]

    class AllBlocksCleared(KVCacheEvent, tag="AllBlocksCleared"):
        pass


class sglang:
    """SGLang 0.5: positional, optional medium, attn_dp_rank."""

    class EventBatch(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):
        ts: float
        events: list[Any]
        attn_dp_rank: Optional[int] = None

    class KVCacheEvent(msgspec.Struct, array_like=True, omit_defaults=True, gc=False, tag=True):
        pass

    class BlockStored(KVCacheEvent, tag="BlockStored"):
        block_hashes: list[int]
        parent_block_hash: Optional[int]
        token_ids: list[int]
        block_size: int
        lora_id: Optional[int]
        medium: Optional[str] = None

    class BlockRemoved(KVCacheEvent, tag="BlockRemoved"):
        block_hashes: list[int]
        medium: Optional[str] = None

    class AllBlocksCleared(KVCacheEvent, tag="AllBlocksCleared"):
        pass


ENCODINGS = {
    "vllm": vllm,
    "vllm-array": vllm_array,
    "vllm-0.8": vllm_08,
    "sglang": sglang,
    "sglang-0.4": vllm_08,
}


def block_hash(value):
    if isinstance(value, dict):
        return bytes.fromhex(value["bytes"])
    return value


def build_event(types, spec):
    if "raw" in spec:
        return spec["raw"]
    spec = dict(spec)
    kind = getattr(types, spec.pop("type"))
    fields = set(kind.__struct_fields__)
    for key in ("block_hashes",):
        if key in spec:
            spec[key] = [block_hash(h) for h in spec[key]]
    if spec.get("parent_block_hash") is not None:
        spec["parent_block_hash"] = block_hash(spec["parent_block_hash"])
    if spec.get("extra_keys") is not None:
        spec["extra_keys"] = [tuple(k) if k is not None else None for k in spec["extra_keys"]]
    # Required fields the test left out take the engines' usual values.
    defaults = {
        "parent_block_hash": None,
        "lora_id": None,
        "medium": "GPU",
        "lora_name": None,
        "block_size": 16,
    }
    for key, value in defaults.items():
        if key in fields and key not in spec:
            spec[key] = value
    return kind(**{k: v for k, v in spec.items() if k in fields})


END_SEQ = (-1).to_bytes(8, "big", signed=True)


class ReplayBuffer:
    """vLLM's replay buffer and its ROUTER socket."""

    def __init__(self, context, buffer_steps):
        self.buffer = deque(maxlen=buffer_steps)
        self.lock = threading.Lock()
        self.router = context.socket(zmq.ROUTER)
        self.port = self.router.bind_to_random_port("tcp://127.0.0.1")
        threading.Thread(target=self.serve, daemon=True).start()

    def append(self, seq, payload):
        with self.lock:
            self.buffer.append((seq, payload))

    def serve(self):
        while True:
            frame = self.router.recv_multipart()
            if len(frame) != 3:
                continue
            client_id, _, start_seq_bytes = frame
            start_seq = int.from_bytes(start_seq_bytes, "big")
            with self.lock:
                buffered = list(self.buffer)
            for seq, buf in buffered:
                if seq >= start_seq:
                    self.router.send_multipart((client_id, b"", seq.to_bytes(8, "big"), buf))
            self.router.send_multipart((client_id, b"", END_SEQ, b""))


def main():
    args = sys.argv[1:]
    replay_steps = None
    if "--replay" in args:
        at = args.index("--replay")
        replay_steps = int(args[at + 1])
        del args[at : at + 2]
    context = zmq.Context.instance()
    pub = context.socket(zmq.PUB)
    pub.set_hwm(100_000)
    if args:
        port = int(args[0])
        pub.bind(f"tcp://127.0.0.1:{port}")
    else:
        port = pub.bind_to_random_port("tcp://127.0.0.1")
    print(f"port {port}", flush=True)
    replay = None
    if replay_steps is not None:
        replay = ReplayBuffer(context, replay_steps)
        print(f"replay {replay.port}", flush=True)
    encoder = msgspec.msgpack.Encoder()
    seq_gen = itertools.count()
    for line in sys.stdin:
        command = json.loads(line)
        if "std_hash" in command:
            packed = b"".join(t.to_bytes(4, "big") for t in command["std_hash"])
            digest = hashlib.sha256(packed).digest()
            print(int.from_bytes(digest[:8], "big") & 0x7FFFFFFFFFFFFFFF, flush=True)
        elif "frames" in command:
            pub.send_multipart([bytes.fromhex(f) for f in command["frames"]])
            print("ok", flush=True)
        else:
            spec = command["publish"]
            types = ENCODINGS[spec.get("encoding", "vllm")]
            events = [build_event(types, e) for e in spec.get("events", [])]
            batch_fields = {"ts": spec.get("ts", time.time()), "events": events}
            rank = spec.get("dp_rank")
            if rank is not None:
                rank_field = [f for f in types.EventBatch.__struct_fields__ if f.endswith("rank")]
                batch_fields[rank_field[0]] = rank
            payload = encoder.encode(types.EventBatch(**batch_fields))
            seq = spec.get("seq")
            if seq is None:
                seq = next(seq_gen)
            if replay is not None:
                replay.append(seq, payload)
            if not spec.get("drop"):
                topic = spec.get("topic", "kv-events").encode()
                pub.send_multipart([topic, seq.to_bytes(8, "big"), payload])
            print("ok", flush=True)


if __name__ == "__main__":
    main()
