#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpus (fuzz/seeds/<target>/), committed to
the repo. Run again only to change the seeds:

    python3 fuzz/make-seeds.py [MODEL.gguf] [REFERENCE_README.md]

GGUF seeds are cut from the real default model: its first 64 KiB, and its
whole metadata with every array cut to 8 entries and 3 of its tensors cut to
32 elements each (a valid, small GGUF). Config seeds are the TOML blocks of
the README and the reference design."""
import json, os, re, struct, sys

root = os.path.dirname(os.path.abspath(__file__))
model = sys.argv[1] if len(sys.argv) > 1 else os.path.expanduser(
    "~/.cache/symbiont/models/SmolLM2-135M-Instruct.Q4_1.gguf")
reference = sys.argv[2] if len(sys.argv) > 2 else os.path.join(
    root, "..", "..", "shared", "reference", "models-module-README.md")

def put(target, name, data):
    d = os.path.join(root, "seeds", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())

# --- GGUF -----------------------------------------------------------------
class R:
    def __init__(self, b): self.b, self.p = b, 0
    def take(self, n):
        v = self.b[self.p:self.p + n]; self.p += n; return v
    def u32(self): return struct.unpack("<I", self.take(4))[0]
    def u64(self): return struct.unpack("<Q", self.take(8))[0]
    def s(self): return self.take(self.u64())

SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}

def value(r, ty, cut):
    """Reads a value of type `ty`; returns its bytes, arrays cut to `cut`."""
    if ty in SIZES:
        return r.take(SIZES[ty])
    if ty == 8:
        s = r.s(); return struct.pack("<Q", len(s)) + s
    if ty == 9:
        et, n = r.u32(), r.u64()
        items = [value(r, et, cut) for _ in range(n)]
        items = items[:cut]
        return struct.pack("<IQ", et, len(items)) + b"".join(items)
    raise ValueError(f"type {ty}")

with open(model, "rb") as f:
    raw = f.read(16 << 20)
put("gguf_header", "real-first-64k", raw[:64 << 10])
r = R(raw)
assert r.take(4) == b"GGUF"
version, n_t, n_kv = r.u32(), r.u64(), r.u64()
kvs, template = [], None
for _ in range(n_kv):
    k = r.s(); ty = r.u32()
    start = r.p
    v = value(r, ty, 8)
    if k == b"tokenizer.chat_template":
        template = raw[start + 8:r.p].decode()
    kvs.append(struct.pack("<Q", len(k)) + k + struct.pack("<I", ty) + v)
tensors = []
for _ in range(min(n_t, 3)):
    name = r.s(); nd = r.u32(); dims = [r.u64() for _ in range(nd)]
    ty = r.u32(); r.u64()
    tensors.append((name, ty))
BLOCK = {0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 8: (32, 34), 12: (256, 144), 14: (256, 210)}
out = [b"GGUF", struct.pack("<IQQ", version, len(tensors), len(kvs))] + kvs
offset, sizes = 0, []
for name, ty in tensors:
    block, size = BLOCK.get(ty, (1, 4))
    n = max(32, block)
    out.append(struct.pack("<Q", len(name)) + name + struct.pack("<IQIQ", 1, n, ty, offset))
    nbytes = n // block * size
    sizes.append(nbytes)
    offset += (nbytes + 31) // 32 * 32
head = b"".join(out)
head += b"\0" * ((-len(head)) % 32)
put("gguf_header", "real-cut", head + b"\x11" * offset)
put("gguf_header", "empty-v3", b"GGUF" + struct.pack("<IQQ", 3, 0, 0))

# --- chat templates -------------------------------------------------------
if template:
    put("chat_template", "smollm2", template + "\0user\0Hi\0assistant\0Hello!\0user\0More?")
put("chat_template", "system-first",
    "{% for m in messages %}{% if m.role == 'system' %}[S]{{ m.content | trim }}"
    "{% else %}<{{ m.role }}>{{ m.content }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}\0system\0 Be brief. \0user\0Hi")
put("chat_template", "raise", "{{ raise_exception('no') }}\0user\0x")
put("chat_template", "loops", "{% for i in range(100) %}{% for j in range(100) %}{{ i*j }}{% endfor %}{% endfor %}")

# --- protocol ---------------------------------------------------------------
plan = {"address_space_bytes": 1 << 30, "cpu_seconds": 240, "file_size_bytes": 1 << 20,
        "cpu_count": 1, "nice": 19, "confine_filesystem": True, "read_paths": ["/etc"],
        "read_fds": [3], "exec_paths": [], "write_paths": ["/tmp/s"], "scratch": ["/tmp/s", 1048576],
        "max_open_files": 256, "network": "None", "sockets": "None",
        "syscalls": {"AllowList": {"extra": ["uname"]}}, "no_child_processes": True,
        "disable_debugging": True, "drop_capabilities": True, "allow_exec": False, "strict": True}
applied = {"layers": [{"name": "landlock", "enforced": {"Ok": None}},
                      {"name": "network namespace", "enforced": {"Err": "EPERM"}}], "setup_micros": 1500}
sampling = {"temperature": 0.7, "top_k": 40, "top_p": 0.9, "min_p": 0.05,
            "repeat_penalty": 1.1, "repeat_last_n": 64, "seed": 42}
msgs = {
    "launch": {"type": "launch", "protocol_version": 4, "model_path": "/m.gguf", "threads": 2,
               "context_size": 2048, "batch_size": 512, "slots": 4, "supervisor_pid": 1, "sandbox": plan},
    "generate": {"type": "generate", "id": 7, "prompt": "Hi", "chat": True,
                 "history": [{"role": "system", "content": "Be brief."}], "max_tokens": 64,
                 "sampling": sampling, "stop": ["\n\n"], "timeout_ms": 30000},
    "cancel": {"type": "cancel", "id": 7},
    "ping": {"type": "ping", "nonce": 9},
    "shutdown": {"type": "shutdown"},
    "confined": {"type": "confined", "sandbox": applied},
    "ready": {"type": "ready", "protocol_version": 4, "worker_version": "0.1.0",
              "architecture": "llama", "name": "SmolLM2", "parameters": 134515008,
              "size_bytes": 98000000, "trained_context": 8192, "context_size": 2048,
              "vocab_size": 49152, "chat_template": True, "threads": 2, "load_ms": 120.5,
              "sandbox": applied},
    "load_failed": {"type": "load_failed", "stage": "model", "detail": "bad tensor"},
    "prompt_read": {"type": "prompt_read", "id": 7, "input_tokens": 12},
    "token": {"type": "token", "id": 7, "text": "Hello \u00e9"},
    "done": {"type": "done", "id": 7, "stats": {"input_tokens": 12, "output_tokens": 3,
             "prompt_ms": 10.5, "generation_ms": 20.25, "total_ms": 31.0, "cached_tokens": 7,
             "finish": "stop_sequence", "stop_sequence": "\n\n"}},
    "failed": {"type": "failed", "id": 7, "error": {"kind": "prompt_too_long", "tokens": 9000,
               "context_size": 2048}},
    "pong": {"type": "pong", "nonce": 9},
}
stream = b""
for name, m in msgs.items():
    body = json.dumps(m).encode()
    put("protocol", name, body)
    stream += struct.pack("<I", len(body)) + body
put("protocol", "stream", stream)

# --- stream text --------------------------------------------------------------
put("stream_text", "stops", b"END\xff\n\n\xfehello E\xfdN\xfdD tail")
put("stream_text", "utf8", "\xfe".encode("latin-1") + "é€😀".encode() + b"\xfd\xe2\x82\xfd\xac\xff a")
put("stream_text", "overlap", b"ab\xffb\xfexa\xfdb\xfdc")

# --- configs ------------------------------------------------------------------
n = 0
for src in [os.path.join(root, "..", "README.md"), reference]:
    if not os.path.exists(src):
        continue
    for block in re.findall(r"```toml\n(.*?)```", open(src).read(), re.S):
        n += 1
        put("config", f"block-{n:02}.toml", block)
extra = {
    "profiles.toml": """[slm]
enabled = true
default_sandbox_profile = "tools"
[slm.sandbox_profiles.tools.resources]
max_memory_mb = 512
max_cpu_cores = 1.5
[slm.sandbox_profiles.tools.filesystem]
read_paths = ["/usr/share", "/etc/../etc"]
denied_paths = ["/etc/shadow"]
[slm.sandbox_profiles.tools.network]
access_mode = "Restricted"
allowed_destinations = [{ host = "api.example.com", port = 443 }]
[slm.sandbox_profiles.tools.process_limits]
allowed_syscalls = ["uname"]
max_execution_time_seconds = 30
""",
    "agents.toml": """[slm]
enabled = true
[[slm.model_allow_lists.global_models]]
id = "smol"
name = "SmolLM2"
provider = { LocalFile = { file_path = "/models/smol.gguf" } }
capabilities = ["TextGeneration", "Embeddings"]
[slm.model_allow_lists.global_models.resource_requirements]
min_memory_mb = 256
[slm.model_allow_lists.agent_model_maps]
scanner = ["smol"]
""",
    "broken.toml": "[slm]\nenabled = 3\nunknown_key = [1, {a = 2}]\n[slm.sandbox_profiles.x]\nresources = 5\n",
}
for name, text in extra.items():
    put("config", name, text)
print("seeds written under", os.path.join(root, "seeds"))
