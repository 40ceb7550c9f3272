"""Resident memory at the phase boundaries of a training run (current and high-water mark, from
/proc/self/status). Usage: python bench/memory_phases.py TRAIN.csv
Results: BENCHMARKS.md, "Memory and MFU".
"""
import sys
import pandas as pd
def rss():
    with open("/proc/self/status") as f:
        d = dict(l.split(":",1) for l in f)
    return d["VmRSS"].strip(), d["VmHWM"].strip()
print("start", rss(), flush=True)
from lorafit import Classifier
from lorafit.training import Callback
print("imported", rss(), flush=True)
class CB(Callback):
    def on_phase(self, name): print("phase", name, rss(), flush=True)
    def on_step(self, step, loss):
        if step % 50 == 0: print("step", step, rss(), flush=True)
    def on_evaluate(self, r): print("eval", r["step"], rss(), flush=True)
tr = pd.read_csv(sys.argv[1], keep_default_na=False, dtype=str)
clf = Classifier().fit(tr.text.tolist(), tr.label.tolist(), callback=CB())
print("done", rss(), flush=True)
