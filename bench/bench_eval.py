"""Batched evaluation benchmark: answers/s of `generate_answers` (greedy, left-padded batches sorted by prompt length)
at batch size 1 (one question per `generate` call, as `llava_lora_eval --batch_size 1`) vs 4 and 8, on a small LLaVA-1.5
trained a little on the shapes task (so answers are words that stop at end-of-sequence, not noise), over held-out
shapes questions mixing images and text-only. Batch sizes are interleaved run by run; every run's answers must be
the batch-size-1 answers.

    python bench/bench_eval.py            # 96 questions, 5 runs per batch size
    python bench/bench_eval.py --quick    # 16 questions, 1 run (smoke test)
"""
from __future__ import annotations
import argparse, json, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH, median, write_result
from bench_data import interleaved_runs
import torch

SIZE = dict(hidden_size=384, num_layers=4, image_size=64)   # 64 image tokens a question; ~10M parameters

def setup(workdir, n, train_steps):
    "The trained model, its processor and `n` held-out `(conversations, image)` questions with their references."
    from llava_lora_nb.testing import tiny_llava, tiny_processor, make_shapes_dataset, train_a_little
    from llava_lora_nb.generation import _record_image
    folder = Path(workdir)/'shapes'
    proc = tiny_processor(image_size=SIZE['image_size'])
    model = tiny_llava(tokenizer=proc.tokenizer, **SIZE)
    t0 = time.perf_counter()
    losses = train_a_little(model, proc, make_shapes_dataset(folder, n=128, seed=0), folder, steps=train_steps)
    train_s = time.perf_counter() - t0
    recs = json.loads(make_shapes_dataset(folder, n=n, seed=1, name='heldout.json').read_text())
    items = [(r['conversations'][:-1], _record_image(folder, r['image']) if 'image' in r else None) for r in recs]
    refs = [r['conversations'][-1]['value'] for r in recs]
    return model, proc, items, refs, {'train_steps': train_steps, 'train_s': train_s, 'loss_start': losses[0], 'loss_end': losses[-1],
                                      'parameters': sum(p.numel() for p in model.parameters())}

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--quick', action='store_true'); p.add_argument('--n', type=int, default=None); p.add_argument('--runs', type=int, default=None)
    p.add_argument('--max_new_tokens', type=int, default=8); p.add_argument('--batch_sizes', default='1,4,8')
    p.add_argument('--threads', type=int, default=1, help='torch threads (default 1: on a shared machine, OpenMP threads that spin-wait for a '
                   'busy core make single runs many times slower)')
    p.add_argument('--workdir', default='/tmp/bench-eval'); p.add_argument('--json', default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    from llava_lora_nb.generation import generate_answers, exact_match
    n, runs = a.n or (16 if a.quick else 96), a.runs or (1 if a.quick else 5)
    sizes = [int(b) for b in a.batch_sizes.split(',')]
    assert sizes[0] == 1, '--batch_sizes starts with 1, the baseline'
    model, proc, items, refs, info = setup(a.workdir, n, 10 if a.quick else 30)
    print('trained', info, flush=True)
    answers = {}
    def measure(bs, _):
        t0 = time.perf_counter()
        out = generate_answers(model, proc, items, max_new_tokens=a.max_new_tokens, batch_size=bs)
        dt = time.perf_counter() - t0
        answers.setdefault(bs, []).append(out)
        return len(items) / dt
    pipes = {f'bs{b}': b for b in sizes}
    res, med, ratio = interleaved_runs(pipes, runs, 'bs1', settings=(None,), measure=measure, compared=[f'bs{b}' for b in sizes[1:]])
    ref = answers[1][0]
    identical = {f'bs{b}': all(x == ref for x in answers[b]) for b in sizes}
    new_tokens = sum(len(proc.tokenizer(x, add_special_tokens=False)['input_ids']) for x in ref)
    result = {'n_questions': n, 'image_questions': sum(im is not None for _, im in items), 'runs': runs, 'max_new_tokens': a.max_new_tokens,
              'model': {**SIZE, **info, 'image_tokens': (SIZE['image_size'] // 8) ** 2}, 'answers_per_s_median': med,
              'answers_per_s_raw': res, 'speedup_over_bs1': ratio, 'answers_identical_to_bs1': identical,
              'answer_tokens_mean': new_tokens / n, 'exact_match': sum(exact_match(x, r) for x, r in zip(ref, refs)) / n,
              'example_answers': list(zip(ref, refs))[:6]}
    write_result('eval', result, a.json or (Path(a.workdir)/'eval_quick.json' if a.quick else None))
    print(json.dumps({k: result[k] for k in ('answers_per_s_median', 'speedup_over_bs1', 'answers_identical_to_bs1', 'exact_match')}, indent=2))
    assert all(identical.values()), f"batched answers differ from batch size 1: {identical}"

if __name__ == '__main__': main()
