import pos3
from helpers import local_tree, put, remote_tree, write


def test_round_trip(s3, bucket, cache):
    put(s3, bucket, {"data/a.txt": b"a", "data/sub/b.txt": b"bb"})
    with pos3.mirror(cache_root=cache, show_progress=False):
        p = pos3.download(f"s3://{bucket}/data")
        assert p == cache / "_" / bucket / "data"
        assert local_tree(p) == {"a.txt": b"a", "sub/b.txt": b"bb"}
        out = pos3.upload(f"s3://{bucket}/out", interval=None)
        write(out, {"x/y.bin": b"123"})
    assert remote_tree(s3, bucket, "out/") == {"x/y.bin": b"123"}
