# Copied unchanged from lorafit's shared reference recipes (../shared/reference/probe_recipe.py, lorafit maintainers).
"""Frozen-encoder linear probe: mean-pooled MiniLM embeddings + logistic regression (no fine-tuning).
Usage: python probe_recipe.py MODEL_DIR TRAIN.csv TEST.csv [N_PER_CLASS]"""
import json, sys, time
import numpy as np, pandas as pd, torch
from sklearn.linear_model import LogisticRegression
from transformers import AutoModel, AutoTokenizer

model_dir, tr, te = sys.argv[1], pd.read_csv(sys.argv[2]), pd.read_csv(sys.argv[3])
if len(sys.argv) > 4:
    tr = tr.sample(frac=1, random_state=0).groupby("label").head(int(sys.argv[4]))
tok = AutoTokenizer.from_pretrained(model_dir); enc = AutoModel.from_pretrained(model_dir).eval()

@torch.inference_mode()
def embed(texts, bs=256):
    order = np.argsort([len(t) for t in texts]); out = np.zeros((len(texts), enc.config.hidden_size), np.float32)
    for i in range(0, len(texts), bs):
        idx = order[i:i + bs]; b = tok([texts[j] for j in idx], padding=True, truncation=True, max_length=128, return_tensors="pt")
        h = enc(**b).last_hidden_state; m = b["attention_mask"].unsqueeze(-1).float()
        e = (h * m).sum(1) / m.sum(1); out[idx] = torch.nn.functional.normalize(e, dim=-1).numpy()
    return out

t0 = time.time(); Xtr = embed(tr["text"].astype(str).tolist()); t_emb = time.time() - t0
clf = LogisticRegression(C=10, max_iter=3000).fit(Xtr, tr["label"]); wall = time.time() - t0
acc = float((clf.predict(embed(te["text"].astype(str).tolist())) == te["label"]).mean())
print(json.dumps({"peer": "frozen-probe", "train_rows": len(tr), "train_wall_s": round(wall, 1),
                  "embed_samples_per_s": round(len(tr) / t_emb, 1), "test_accuracy": round(acc, 4)}))
