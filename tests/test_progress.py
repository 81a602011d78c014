"`core.progress` in a real Jupyter kernel: the output a notebook saves is the finished bar, never a frozen `0%`."
import nbformat
from nbclient import NotebookClient

def test_saved_bar_is_finished():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "from llava_lora_nb.core import progress\n"
        "for i in progress(range(40), desc='checking records'): pass\n"
        "for i in progress(range(40), desc='tokenizing', leave=False): pass\n"
        "print('done')")]
    NotebookClient(nb, kernel_name='python3', timeout=120, extra_arguments=['--IPKernelApp.log_level=40']).execute()
    outs = nb.cells[0].outputs
    texts = [o['data'].get('text/plain', '') for o in outs if o['output_type'] == 'display_data']
    assert texts[0].startswith('checking records: 100%') and '40/40' in texts[0], texts
    assert 'application/vnd.jupyter.widget-view+json' in outs[0]['data']       # a live widget while it runs
    assert texts[1] == '', texts                                                 # a transient bar leaves nothing
    assert not any('0%|' in t and '100%' not in t for t in texts), texts
    assert any(o['output_type'] == 'stream' and 'done' in o['text'] for o in outs)

def test_text_bar_after_ipykernel_import():
    "A process that imported `ipykernel` (a test worker after a notebook, a script using widgets) still gets the text bar."
    import subprocess, sys
    code = ("import io, ipykernel.zmqshell\n"          # what makes tqdm.auto choose its notebook bar
            "from llava_lora_nb.core import progress, in_notebook\n"
            "err = io.StringIO(); bar = progress(range(3), desc='checking', file=err); list(bar)\n"
            "assert not in_notebook() and type(bar).__name__ == 'tqdm' and '3/3' in err.getvalue(), (type(bar), err.getvalue())\n")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
