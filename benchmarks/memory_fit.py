"""Per-GPU memory of a `backend: trl` GRPO run, by arithmetic: the "What fits where" table in docs/multi-gpu.md.

    python benchmarks/memory_fit.py                          # that table (Qwen2.5 1.5B-14B, 3k / 7k)
    python benchmarks/memory_fit.py --config path/to/config.json --seq 4096 --gpus 4

Terms, in GiB per GPU (GRPO, 8 rollouts per prompt, micro-batch 2, LoRA on all seven projections,
gradient checkpointing, transformers + peft + bitsandbytes as kit.trl_backend loads them):
- weights: DDP, 4-bit: linear layers at 0.515 B per parameter (nf4 + double-quantized constants),
  embedding and head at 2 B (kept in the compute dtype); ZeRO-3, 16-bit: every parameter at 2 B,
  divided by the number of GPUs;
- LoRA state: bf16 weights (TRL casts a 4-bit model's adapter to bf16; under ZeRO-3 it takes the
  base's dtype) + bf16 gradients + 8-bit Adam's two states = 6 B per LoRA parameter;
- activations: the plain stack keeps each layer's input on the GPU (micro-batch x T x hidden x 2 B
  x layers) and recomputes one layer at a time (micro-batch x T x (4 hidden + 3 MLP) x 2 B, twice
  for its gradients);
- the rollouts' KV cache: 8 x T x layers x 2 x KV heads x head size x 2 B;
- TRL's log-prob tile (0.5) and slack (1.0).
Estimates, checked against one measurement only (docs/performance.md); not a guarantee.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

GIB = 2 ** 30


@dataclass(frozen=True)
class Shape:
    hidden: int
    layers: int
    mlp: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    params: float

    @classmethod
    def from_config(cls, path: str | Path, params: float | None = None) -> "Shape":
        c = json.loads(Path(path).read_text())
        head_dim = c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]
        shape = cls(c["hidden_size"], c["num_hidden_layers"], c["intermediate_size"], c["num_attention_heads"],
                    c.get("num_key_value_heads", c["num_attention_heads"]), head_dim, c["vocab_size"],
                    bool(c.get("tie_word_embeddings", False)), 0.0)
        return cls(**{**shape.__dict__, "params": params or shape.counted_params()})

    def counted_params(self) -> float:
        """Parameters from the shapes (attention with biases on q/k/v ignored: a rounding error)."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        per_layer = self.hidden * (q + 2 * kv) + q * self.hidden + 3 * self.hidden * self.mlp + 2 * self.hidden
        return self.layers * per_layer + self.vocab * self.hidden * (1 if self.tied else 2)


# the released Qwen2.5 instruct models' config.json values, and their published parameter counts
QWEN25 = {
    "Qwen2.5-0.5B": Shape(896, 24, 4864, 14, 2, 64, 151936, True, 494e6),
    "Qwen2.5-1.5B": Shape(1536, 28, 8960, 12, 2, 128, 151936, True, 1.54e9),
    "Qwen2.5-3B": Shape(2048, 36, 11008, 16, 2, 128, 151936, True, 3.09e9),
    "Qwen2.5-7B": Shape(3584, 28, 18944, 28, 4, 128, 152064, False, 7.62e9),
    "Qwen2.5-14B": Shape(5120, 48, 13824, 40, 8, 128, 152064, False, 14.7e9),
}


def per_gpu(s: Shape, seq: int, micro_batch: int = 2, rollouts: int = 8, rank: int = 32,
            zero3_gpus: int | None = None) -> dict[str, float]:
    """The terms (GiB) and their total for one GPU; `zero3_gpus`: 16-bit weights split that many ways."""
    embedding = s.vocab * s.hidden * (1 if s.tied else 2)
    if zero3_gpus:
        weights = s.params * 2 / zero3_gpus
    else:
        weights = (s.params - embedding) * 0.5 * 1.03 + embedding * 2
    q, kv = s.heads * s.head_dim, s.kv_heads * s.head_dim
    lora = s.layers * rank * ((s.hidden + q) + 2 * (s.hidden + kv) + (q + s.hidden) + 3 * (s.hidden + s.mlp))
    terms = {
        "weights": weights,
        "lora_state": lora * 6,
        "activations": micro_batch * seq * s.hidden * 2 * s.layers + micro_batch * seq * (4 * s.hidden + 3 * s.mlp) * 4,
        "rollouts_kv": rollouts * seq * s.layers * 2 * kv * 2,
        "logprob_tile_and_slack": 1.5 * GIB,
    }
    out = {k: v / GIB for k, v in terms.items()}
    out["total"] = sum(out.values())
    return out


def table(models: dict[str, Shape], seqs: list[int], gpus: list[int]) -> str:
    head = ["model", "T (prompt + answer)", "weights", "LoRA state", "activations", "rollouts' KV",
            "DDP, 4-bit, any GPU count", *(f"ZeRO-3, 16-bit, {n} GPUs" for n in gpus)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, shape in models.items():
        for seq in seqs:
            d = per_gpu(shape, seq)
            zero = [per_gpu(shape, seq, zero3_gpus=n)["total"] for n in gpus]
            cells = [name, f"{seq:,}", f"{d['weights']:.1f}", f"{d['lora_state']:.2f}", f"{d['activations']:.1f}",
                     f"{d['rollouts_kv']:.1f}", f"**{d['total']:.1f}**", *(f"{z:.1f}" for z in zero)]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", help="a model's config.json (default: the Qwen2.5 1.5B-14B table)")
    ap.add_argument("--params", type=float, help="the model's parameter count (default: counted from the shapes)")
    ap.add_argument("--seq", type=int, action="append", help="sequence length(s) (default: 3072 and 7168)")
    ap.add_argument("--gpus", type=int, action="append", help="ZeRO-3 GPU counts (default: 2 and 8)")
    args = ap.parse_args(argv)
    models = ({Path(args.config).parent.name or "model": Shape.from_config(args.config, args.params)} if args.config
              else {k: v for k, v in QWEN25.items() if k != "Qwen2.5-0.5B"})
    print(table(models, args.seq or [3072, 7168], args.gpus or [2, 8]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
