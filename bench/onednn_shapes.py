"""Resident memory of bf16 feed-forward steps on random lengths, exact or rounded up to a multiple.
Usage: python bench/onednn_shapes.py MULTIPLE   (1: exact lengths; 8: what lorafit pads to)
Results: BENCHMARKS.md, "Choices made in this round" (padding to a multiple of 8 tokens).
"""
import sys, torch, time, random
def rss():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0])//1024
torch.manual_seed(0); random.seed(0)
lin = torch.nn.Sequential(torch.nn.Linear(384,1536), torch.nn.GELU(), torch.nn.Linear(1536,384))
mult = int(sys.argv[1])
print("start", rss())
t=time.time()
for i in range(300):
    L = random.randint(5, 80); L = -(-L // mult) * mult
    B = 32
    x = torch.randn(B, L, 384, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = lin(x)
    y.float().sum().backward()
print("end", rss(), "time", round(time.time()-t,2))
