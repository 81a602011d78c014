"""The exported pair in llama.cpp itself (issue 28), flagged slow: it needs llama-cpp-python (`pip install
'llava_lora_nb[gguf]'`, which compiles llama.cpp), not part of CI's install, so it is skipped there. Run it with
`python -m pytest -q -s tests/test_export_llama_cpp.py`; it prints what it measured (recorded in bench/README.md §6).

On the tiny model finetuned by `make demo`'s recipe it compares llama.cpp's greedy answers to the held-out questions
with transformers' pipeline on the merged folder, at f32, f16 and q8_0, and llama.cpp's text-only logits with the merged
model's at f32."""
import numpy as np, pytest, torch
from pathlib import Path

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
llama_cpp = pytest.importorskip('llama_cpp', reason="llama-cpp-python is not installed (pip install 'llava_lora_nb[gguf]')")

@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    from llava_lora_nb.demo import run_demo
    return run_demo(tmp_path_factory.mktemp('demo'), quiet=True)

def test_llama_cpp_answers_like_the_merged_model(demo, tmp_path):
    from llava_lora_nb.export import export_gguf, llama_cpp_answers, llama_cpp_logits
    from llava_lora_nb.validate import served_answers
    from llava_lora_nb.records import load_records
    from transformers import AutoProcessor, LlavaForConditionalGeneration
    recs, folder = load_records(demo['heldout_data']), Path(demo['heldout_data']).parent
    hf = served_answers(demo['merged'], recs, folder)
    same = {}
    for t in ('f32', 'f16', 'q8_0'):
        export_gguf(demo['merged'], tmp_path/t, type=t, progress=False)
        same[t] = sum(a == b for a, b in zip(llama_cpp_answers(tmp_path/t, recs, folder), hf))
    tok = AutoProcessor.from_pretrained(demo['merged']).tokenizer
    ids = tok('A chat between a curious user and an artificial intelligence assistant. USER: Name the shape. ASSISTANT: circle').input_ids
    with torch.no_grad(): ref = LlavaForConditionalGeneration.from_pretrained(demo['merged']).eval()(input_ids=torch.tensor([ids])).logits[0].numpy()
    diff = float(np.abs(llama_cpp_logits(tmp_path/'f32', ids) - ref).max())
    print(f"\nllama-cpp-python {llama_cpp.__version__}: llama.cpp answers as the merged model on " +
          ', '.join(f"{t} {n}/{len(hf)}" for t, n in same.items()) + f"; text-only logits at f32 differ by at most {diff:.2g} "
          f"(largest logit {np.abs(ref).max():.3g})")
    assert diff < 0.05 * np.abs(ref).max()
    # 100% needs llama.cpp's LLaVA graph with the CLS token first (bench/README.md §6); released builds put it last
    assert all(n >= 0.9 * len(hf) for n in same.values()), same
