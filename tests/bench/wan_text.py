"""wan_bench's text: an order-2 word Markov chain trained on this machine's
documentation (run as `wan_bench.py --generate-text OUT SIZE SEED`), and the zstd
sizes it is judged by."""

import gzip
import hashlib
import os
import random
import subprocess
import time


def corpus_paths():
    paths = []
    for base in ("/usr/share/doc", "/usr/share/common-licenses"):
        for root, dirs, files in os.walk(base):
            dirs.sort()
            for f in sorted(files):
                p = os.path.join(root, f)
                low = f.lower()
                if not (base.endswith("licenses") or low == "copyright"
                        or low.startswith(("changelog", "readme", "news"))
                        or low.endswith((".txt", ".md", ".rst", ".txt.gz", ".md.gz", ".rst.gz"))):
                    continue
                if os.path.islink(p) or not os.path.isfile(p):
                    continue
                paths.append(p)
    return paths


def generate_text(out_path, size, seed):
    """Writes `size` bytes of Markov text to out_path; returns what it was made from."""
    t0 = time.monotonic()
    paths = corpus_paths()
    seen, lines, used = set(), [], 0
    h = hashlib.sha256()
    for p in paths:
        try:
            with open(p, "rb") as f:
                b = f.read()
            if p.endswith(".gz"):
                b = gzip.decompress(b)
            s = b.decode("utf-8")
        except (OSError, ValueError, EOFError):
            continue
        if "\0" in s:
            continue
        used += 1
        for line in s.split("\n"):
            line = line.strip()
            if len(line) < 8 or line in seen:
                continue
            seen.add(line)
            lines.append(line)
            h.update(line.encode() + b"\n")
    del seen
    words = []
    for line in lines:
        words.extend(line.split())
    corpus_bytes = sum(len(l) + 1 for l in lines)
    succ = {}
    for a, b, c in zip(words, words[1:], words[2:]):
        succ.setdefault((a, b), []).append(c)
    keys = list(succ)
    rng = random.Random(seed)
    state = keys[rng.randrange(len(keys))]
    chunks, buf, col, total = [], [], 0, 0
    while total < size:
        nxt = succ.get(state)
        if not nxt:  # end of the corpus: jump somewhere else
            state = keys[rng.randrange(len(keys))]
            continue
        w = nxt[rng.randrange(len(nxt))] if len(nxt) > 1 else nxt[0]
        state = (state[1], w)
        buf.append(w)
        col += len(w) + 1
        if col > 72:
            s = " ".join(buf) + "\n"
            if rng.random() < 0.08:
                s += "\n"
            chunks.append(s)
            total += len(s)
            buf, col = [], 0
    data = "".join(chunks).encode()[:size]
    with open(out_path, "wb") as f:
        f.write(data)
    return {
        "generator": "order-2 word Markov chain, lines wrapped at ~72 columns, blank line with p=0.08",
        "seed": seed,
        "corpus": "/usr/share/doc (copyright, changelog*, README*, NEWS*, *.txt, *.md, *.rst, gz decompressed) "
                  "and /usr/share/common-licenses; lines of 8+ characters, de-duplicated",
        "corpus_files_listed": len(paths),
        "corpus_files_used": used,
        "corpus_distinct_lines": len(lines),
        "corpus_bytes": corpus_bytes,
        "corpus_words": len(words),
        "corpus_sha256": h.hexdigest(),
        "model_states": len(keys),
        "generate_seconds": round(time.monotonic() - t0, 1),
    }


def zstd_size(path, *args):
    p = subprocess.Popen(["zstd", "-q", "-c", *args, str(path)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    n = 0
    while True:
        b = p.stdout.read(1 << 20)
        if not b:
            break
        n += len(b)
    p.wait()
    return n if p.returncode == 0 else None
