"Shared helpers for the benchmarks: machine description, peak RSS, medians, JSON results."
from __future__ import annotations
import json, os, platform, resource, statistics, subprocess, sys, time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH/'results'
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')
LOADAVG_START = os.getloadavg()   # taken when the benchmark script starts (this module is imported first)

def machine() -> dict:
    "CPU model, cores, memory and load of this machine (figures are only comparable on the same one)."
    cpu = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), platform.processor())
    mem = next((int(l.split()[1]) for l in open('/proc/meminfo') if l.startswith('MemTotal')), 0)
    import torch, transformers
    return {'cpu': cpu, 'nproc': os.cpu_count(), 'mem_gib': round(mem / 2**20, 1), 'loadavg_start': LOADAVG_START,
            'python': platform.python_version(), 'torch': torch.__version__, 'transformers': transformers.__version__,
            'torch_threads': torch.get_num_threads()}

def vm(field='VmHWM') -> int:
    "A /proc/self/status memory field in bytes (VmHWM: peak resident set; VmRSS: current)."
    for l in open('/proc/self/status'):
        if l.startswith(field + ':'): return int(l.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

def median(xs): return statistics.median(xs) if xs else None

def run_worker(script, *args, timeout=3600) -> dict:
    "Run `python script --worker ...` in a fresh process; its last stdout line is a JSON dict (plus `process_s`)."
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True, timeout=timeout)
    dt = time.perf_counter() - t0
    if p.returncode != 0: raise RuntimeError(f"worker {args} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    res = json.loads(p.stdout.strip().splitlines()[-1])
    res['process_s'] = dt
    return res

def write_result(name:str, result:dict, path=None) -> Path:
    "Write `result` (with the machine and load average at the end) as JSON to `path` or bench/results/<name>.json."
    result = {'benchmark': name, 'machine': machine(), 'loadavg_end': os.getloadavg(),
              'command': ' '.join([Path(sys.executable).name, *sys.argv]), 'when': time.strftime('%Y-%m-%d %H:%M:%S'), **result}
    path = Path(path) if path else RESULTS/f'{name}.json'
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {path}")
    return path

def mib(b): return None if b is None else round(b / 2**20, 1)
