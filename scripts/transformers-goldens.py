#!/usr/bin/env python3
"""Golden outputs of Hugging Face transformers for tiny random checkpoints of every family.

A developer tool, never run by the tests (they read what it wrote, in
test/fixtures/transformers/): it needs torch and transformers, which the Node project does
not depend on. For each variant it builds a tiny model with seeded random weights (norms and
biases included, so that fusion is exercised), saves it with `save_pretrained` (safetensors,
in the variant's dtype, sharded where asked), reloads it in float64 with
`from_pretrained`, and records:
  - the logits of every position of one token sequence (float32, little-endian),
  - greedy continuations (`generate`, KV cache on) of a prompt,
  - the protocol perplexity (PROTOCOL.md: stories split on <|endoftext|>, each encoded with the
    tokenizer's special tokens, windows of SEQ_LEN tokens) of the first WINDOWS windows.

Usage: python3 scripts/transformers-goldens.py <tokenizer dir> <text file> <out dir> [variant ...]
where <tokenizer dir> holds the stories260K tokenizer.json and tokenizer_config.json
(`npx sliceserve convert --model models/stories260K --out DIR`).
"""
import json
import math
import os
import shutil
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

VOCAB = 512
SEQ_LEN = 128
WINDOWS = 4
TOKENS = [1, 403, 407, 261, 378, 18, 90, 311, 24, 420, 7, 151, 44, 300, 12, 5, 260, 33, 499, 41]
PROMPT = [1, 403, 407, 261, 378, 18]
NEW_TOKENS = 10

BASE = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
            bos_token_id=1, eos_token_id=2)


def variants():
    """name -> (config class, kwargs, on-disk dtype, max shard size or None)."""
    T = transformers
    return {
        'llama': (T.LlamaConfig, dict(BASE, tie_word_embeddings=False), 'float32', None),
        'llama-llama3': (T.LlamaConfig, dict(BASE, head_dim=16, attention_bias=True, mlp_bias=True,
                                            rope_scaling=dict(rope_type='llama3', factor=8.0, low_freq_factor=1.0,
                                                              high_freq_factor=4.0, original_max_position_embeddings=16)),
                         'float32', None),
        'llama-linear': (T.LlamaConfig, dict(BASE, rope_scaling=dict(rope_type='linear', factor=2.0)), 'float32', None),
        'llama-dynamic': (T.LlamaConfig, dict(BASE, max_position_embeddings=64, rope_scaling=dict(rope_type='dynamic', factor=2.0)), 'float32', None),
        'mistral': (T.MistralConfig, dict(BASE, sliding_window=5), 'float16', None),
        'qwen2': (T.Qwen2Config, dict(BASE, tie_word_embeddings=True, rope_theta=1e6), 'float32', None),
        'qwen2-sliding': (T.Qwen2Config, dict(BASE, use_sliding_window=True, sliding_window=5, max_window_layers=1), 'float32', None),
        'qwen3': (T.Qwen3Config, dict(BASE, head_dim=16, tie_word_embeddings=True, rope_theta=1e6), 'bfloat16', None),
        'phi3': (T.Phi3Config, dict(BASE, sliding_window=5, pad_token_id=0), 'float32', None),
        'opt': (T.OPTConfig, dict(vocab_size=VOCAB, hidden_size=32, ffn_dim=48, num_hidden_layers=2, num_attention_heads=4,
                                  max_position_embeddings=128, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                                  word_embed_proj_dim=32), 'float32', '40KB'),
        'phi': (T.PhiConfig, dict(BASE, num_key_value_heads=4, partial_rotary_factor=0.5), 'float32', None),
        'phi-qk-layernorm': (T.PhiConfig, dict(BASE, partial_rotary_factor=0.75, qk_layernorm=True), 'bfloat16', None),
    }


def randomize(model, seed):
    """Seeded weights of a sane scale: linears N(0, 1/fan_in), embeddings N(0, 0.2^2) (a tied head then gives logits of about unit scale),
    norm weights 1 + N(0, 0.1^2), biases N(0, 0.1^2)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith('bias'):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif p.dim() == 1:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            elif 'embed' in name:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))


def stream(tokenizer, text_file):
    data = open(text_file, 'rb').read().split(b'<|endoftext|>')
    ids = []
    for piece in data:
        story = piece.strip(b' \t\n\r\x0b\x0c')
        if story:
            ids.extend(tokenizer(story.decode('utf-8'))['input_ids'])
    return ids


def main():
    tok_dir, text_file, out_dir = sys.argv[1:4]
    only = set(sys.argv[4:])
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=os.path.join(tok_dir, 'tokenizer.json'))
    ids = stream(tokenizer, text_file)
    windows = [ids[i * SEQ_LEN:(i + 1) * SEQ_LEN] for i in range(WINDOWS)]
    for seed, (name, (cls, kwargs, dtype, shard)) in enumerate(variants().items()):
        if only and name not in only:
            continue
        torch.manual_seed(seed)
        config = cls(**kwargs)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        randomize(model, 1000 + seed)
        target = os.path.join(out_dir, name)
        shutil.rmtree(target, ignore_errors=True)
        model.to(getattr(torch, dtype)).save_pretrained(target, **({'max_shard_size': shard} if shard else {}))
        for f in ('tokenizer.json', 'tokenizer_config.json'):
            shutil.copy(os.path.join(tok_dir, f), target)
        ref = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float64).eval()
        with torch.no_grad():
            logits = ref(torch.tensor([TOKENS])).logits[0].to(torch.float32).numpy()
            ref.generation_config.eos_token_id = None
            ref.generation_config.pad_token_id = 0
            out = ref.generate(torch.tensor([PROMPT]), max_new_tokens=NEW_TOKENS, do_sample=False)[0].tolist()
            nll, count = 0.0, 0
            for w in windows:
                lg = ref(torch.tensor([w])).logits[0]
                lp = torch.log_softmax(lg, dim=-1)
                for t in range(len(w) - 1):
                    nll -= lp[t, w[t + 1]].item()
                    count += 1
        logits.astype('<f4').tofile(os.path.join(target, 'expected-logits.f32'))
        expected = {
            'transformers': transformers.__version__, 'torch': torch.__version__, 'dtype': dtype,
            'tokens': TOKENS, 'logits_shape': list(logits.shape),
            'prompt': PROMPT, 'greedy': out[len(PROMPT):],
            'perplexity': {'seq_len': SEQ_LEN, 'windows': WINDOWS, 'value': math.exp(nll / count), 'tokens': count},
        }
        with open(os.path.join(target, 'expected.json'), 'w') as f:
            json.dump(expected, f, indent=2)
            f.write('\n')
        print(name, dtype, 'ppl', expected['perplexity']['value'], 'greedy', expected['greedy'])


if __name__ == '__main__':
    main()
