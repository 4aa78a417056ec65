"""mkarchives.py — test helper for test_datasets.sh: writes the data set archives it uploads,
good and hostile, with the standard library only (zipfile, tarfile), from the MNIST digits
mkdigits wrote (<i>.png, <i>.jpg, labels.txt).

    python3 mkarchives.py <digits dir> <n> <out dir>
"""
import io
import os
import sys
import tarfile
import zipfile

digits, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
labels = {}
for line in open(os.path.join(digits, "labels.txt")):
    i, lab = line.split()
    if int(i) < n:
        labels[int(i)] = lab


def read(name):
    with open(os.path.join(digits, name), "rb") as f:
        return f.read()


def tar_add(t, name, data, kind=tarfile.REGTYPE, link=""):
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.linkname = link
    ti.size = len(data) if kind == tarfile.REGTYPE else 0
    t.addfile(ti, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def zip_raw(path, entries, method=zipfile.ZIP_DEFLATED):
    """entries: (ZipInfo or name, bytes); names are written as given (no sanitizing)."""
    with zipfile.ZipFile(path, "w", method) as z:
        for name, data in entries:
            zi = name if isinstance(name, zipfile.ZipInfo) else zipfile.ZipInfo(name)
            zi.compress_type = method
            z.writestr(zi, data)


P = lambda name: os.path.join(out, name)

# labeled: <label>/<i>.png (JPEGs for odd i), plus what must be skipped: a hidden file,
# __MACOSX/ resource forks, a text file, directory entries
ents = []
for i, lab in labels.items():
    ext = "jpg" if i % 2 else "png"
    ents.append((f"{lab}/{i}.{ext}", read(f"{i}.{ext}")))
ents += [(".DS_Store", b"junk"), ("__MACOSX/0/._0.png", b"\x89PNG junk"),
         ("README.txt", b"digits"), ("0/", b"")]
zip_raw(P("labeled.zip"), ents)

# the same as train/ + test/ under a wrapper folder, as tar.gz; test holds one image per class
with tarfile.open(P("split.tar.gz"), "w:gz") as t:
    seen = set()
    for i, lab in labels.items():
        tar_add(t, f"./digits/train/{lab}/{i}.png", read(f"{i}.png"))
        if lab not in seen:
            seen.add(lab)
            tar_add(t, f"./digits/test/{lab}/{i}.png", read(f"{i}.png"))

# unlabeled: images at the top level, one without an extension (a PNG by its magic bytes)
ents = [(f"{i}.png", read(f"{i}.png")) for i in labels]
ents.append(("noext", read("0.png")))
zip_raw(P("flat.zip"), ents)

# ---- hostile ----
png = read("0.png")
zip_raw(P("traversal.zip"), [("0/a.png", png), ("../evil.png", png)])
with tarfile.open(P("absolute.tar"), "w") as t:
    tar_add(t, "0/a.png", png)
    tar_add(t, "/tmp/evil-abs.png", png)
with tarfile.open(P("symlink.tar"), "w") as t:
    tar_add(t, "0/a.png", png)
    tar_add(t, "1/b.png", b"", tarfile.SYMTYPE, "/etc/passwd")
with tarfile.open(P("hardlink.tar"), "w") as t:
    tar_add(t, "0/a.png", png)
    tar_add(t, "1/b.png", b"", tarfile.LNKTYPE, "0/a.png")
zi = zipfile.ZipInfo("1/link.png")
zi.create_system = 3
zi.external_attr = 0o120777 << 16
zip_raw(P("symlink.zip"), [("0/a.png", png), (zi, b"../../etc/passwd")])
with tarfile.open(P("device.tar"), "w") as t:
    tar_add(t, "0/a.png", png)
    tar_add(t, "1/dev.png", b"", tarfile.CHRTYPE)
zip_raw(P("many.zip"), [(f"{k % 2}/{k}.png", png) for k in range(150)])
# a decompression bomb: a PNG signature, then 8 MiB of zeros (deflate: ~1000x)
zip_raw(P("bomb.zip"), [("0/a.png", png), ("1/b.png", png[:8] + bytes(8 << 20))])
# over the upload limit: 400 kB that do not compress
zip_raw(P("big.zip"), [("0/a.png", png), ("1/b.png", png[:8] + os.urandom(400_000))])
with open(P("notarchive.bin"), "wb") as f:
    f.write(os.urandom(5000))
zip_raw(P("noimages.zip"), [("0/a.txt", b"hello"), ("1/b.bin", os.urandom(100))])
zip_raw(P("badimage.zip"), [("0/a.png", png), ("1/broken.png", png[:8] + b"\0" * 200)])
zip_raw(P("mixed.zip"), [("0/a.png", png), ("b.png", png)])
# a name that is not UTF-8 (byte 0xff), and one of 300 two-byte characters (over dataset_max_path)
with tarfile.open(P("nonutf8.tar"), "w", format=tarfile.GNU_FORMAT, encoding="utf-8",
                  errors="surrogateescape") as t:
    tar_add(t, "0/a.png", png)
    tar_add(t, "1/\udcff.png", png)
zip_raw(P("longname.zip"), [("0/a.png", png), ("1/" + "\u00e9" * 300 + ".png", png)])
