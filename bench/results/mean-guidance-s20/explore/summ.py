import json, sys
for f in sys.argv[1:]:
    d = json.load(open(f)); r = d["rows"]
    for name, s in r.items():
        if name == "samples" or len(sys.argv) == 2:
            print(f"{f.split('/')[-1][:50]:50s} {name:10s} ppl {s.get('gen_ppl',0):7.1f} H {s.get('entropy',0):.3f} "
                  f"MAUVE {s.get('mauve',0):.3f} pre {s.get('mauve_prefix',0):.3f} d2set {s.get('distinct2_set',0):.3f} words {s.get('mean_words',0):.1f}")
