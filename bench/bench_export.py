"""Export benchmark (issue 28): does llama.cpp answer like the model we trained? The tiny LLaVA-1.5 finetuned by `make
demo`'s recipe is merged, exported with `llava_lora_export` at f32, f16 and q8_0, and asked its 60 held-out questions
in llama.cpp (llama-cpp-python, the `[gguf]` extra) as chat messages; the answers are compared with transformers'
pipeline on the merged folder. Also measured: llama.cpp's text-only logits against the merged model's (f32), its image
features against the merged model's projector output (which tells whether this llama.cpp build puts CLIP's CLS token
first, as CLIP does), the export's time and file sizes.

    python bench/bench_export.py                       # with the llama-cpp-python installed
    PYTHONPATH=/path/to/other/llama_cpp python bench/bench_export.py --json bench/results/export_other.json
"""
from __future__ import annotations
import argparse, ctypes, io, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result

def image_features_error(out, merged, image) -> float:
    "Largest difference between llama.cpp's projected image features (mtmd) and the merged model's, for one image at the model's input size."
    import numpy as np, torch
    from PIL import Image
    import llama_cpp.mtmd_cpp as M
    from transformers import AutoProcessor, LlavaForConditionalGeneration
    from llava_lora_nb.images import image_crop, process_image
    from llava_lora_nb.export import llama_cpp_model
    proc = AutoProcessor.from_pretrained(merged); model = LlavaForConditionalGeneration.from_pretrained(merged).eval()
    llm = llama_cpp_model(out); h = llm.chat_handler; h._init_mtmd_context(llm)
    crop = np.asarray(image_crop(image, proc, 'pad')).round().clip(0, 255).astype(np.uint8).transpose(1, 2, 0)
    buf = io.BytesIO(); Image.fromarray(crop).save(buf, format='PNG')
    bm = h._create_bitmap_from_bytes(buf.getvalue())
    txt = M.mtmd_input_text(); s = M.mtmd_default_marker(); txt.text, txt.text_len, txt.add_special, txt.parse_special = s, len(s), False, True
    chunks = M.mtmd_input_chunks_init(); assert M.mtmd_tokenize(h.mtmd_ctx, chunks, ctypes.byref(txt), (M.mtmd_bitmap_p_ctypes * 1)(bm), 1) == 0
    ch = next(c for c in (M.mtmd_input_chunks_get(chunks, i) for i in range(M.mtmd_input_chunks_size(chunks)))
              if M.mtmd_input_chunk_get_type(c) == M.MTMD_INPUT_CHUNK_TYPE_IMAGE)
    n, d = M.mtmd_input_chunk_get_n_tokens(ch), model.config.text_config.hidden_size
    assert M.mtmd_encode_chunk(h.mtmd_ctx, ch) == 0
    cpp = np.ctypeslib.as_array(M.mtmd_get_output_embd(h.mtmd_ctx), shape=(n * d,)).reshape(n, d)
    with torch.no_grad():
        f = model.get_image_features(pixel_values=process_image(image, proc, 'pad')[None], vision_feature_layer=-2, vision_feature_select_strategy='default')
    f = getattr(f, 'pooler_output', f); f = f[0] if isinstance(f, (list, tuple)) else f
    return float(np.abs(cpp - f.reshape(n, d).numpy()).max())

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--workdir', default='/tmp/bench-export'); p.add_argument('--json', default=None)
    a = p.parse_args(argv)
    import numpy as np, torch, llama_cpp
    from transformers import AutoProcessor, LlavaForConditionalGeneration
    from llava_lora_nb.demo import run_demo
    from llava_lora_nb.export import export_gguf, llama_cpp_answers, llama_cpp_logits
    from llava_lora_nb.validate import served_answers
    from llava_lora_nb.generation import exact_match
    from llava_lora_nb.records import load_records
    work = Path(a.workdir)
    demo = work/'demo'
    r = run_demo(demo, quiet=True, overwrite=True) if not (demo/'report.json').exists() else __import__('json').loads((demo/'report.json').read_text())
    recs, folder = load_records(r['heldout_data']), Path(r['heldout_data']).parent
    hf = served_answers(r['merged'], recs, folder)
    refs = [x['conversations'][1]['value'] for x in recs]
    res = {'llama_cpp_python': llama_cpp.__version__, 'questions': len(hf), 'merged_accuracy': sum(map(exact_match, hf, refs)) / len(hf), 'types': {}}
    for t in ('f32', 'f16', 'q8_0'):
        t0 = time.perf_counter(); rep = export_gguf(r['merged'], work/f'gguf-{t}', type=t, overwrite=True, progress=False); dt = time.perf_counter() - t0
        ll = llama_cpp_answers(work/f'gguf-{t}', recs, folder)
        res['types'][t] = {'export_s': dt, 'bytes': {k: v['bytes'] for k, v in rep.files.items()}, 'same_answers': sum(x == y for x, y in zip(ll, hf)),
                           'llama_cpp_accuracy': sum(map(exact_match, ll, refs)) / len(ll), 'read_back_max_error': rep.checks['language_model']['max_error']}
        print(t, res['types'][t], flush=True)
    tok = AutoProcessor.from_pretrained(r['merged']).tokenizer
    ids = tok('A chat between a curious user and an artificial intelligence assistant. USER: Name the shape. ASSISTANT: circle').input_ids
    with torch.no_grad(): ref = LlavaForConditionalGeneration.from_pretrained(r['merged']).eval()(input_ids=torch.tensor([ids])).logits[0].numpy()
    res['text_logits_max_diff_f32'] = float(np.abs(llama_cpp_logits(work/'gguf-f32', ids) - ref).max()); res['text_logits_max_abs'] = float(np.abs(ref).max())
    res['image_features_max_diff_f32'] = image_features_error(work/'gguf-f32', r['merged'], folder/recs[0]['image'])
    res['cls_first'] = res['image_features_max_diff_f32'] < 0.05   # llama.cpp's CLIP graph computes what CLIP computes
    print({k: v for k, v in res.items() if k != 'types'})
    write_result('export', res, a.json)

if __name__ == '__main__': main()
