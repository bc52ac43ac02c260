// An AssemblyScript Spirit: strings, messaging, clocks/random/log, assert/abort, and the guest
// side of the host-allocator tests. Built three ways: the default runtime, the stub runtime, and
// the default runtime with --exportRuntime (the host then allocates through __new/__pin/__unpin).

@external("vudo", "vudo_println") declare function vudo_println(ptr: usize, len: i32): void;
@external("vudo", "vudo_log") declare function vudo_log(level: i32, ptr: usize, len: i32): void;
@external("vudo", "vudo_now") declare function vudo_now(): i64;
@external("vudo", "vudo_monotonic_now") declare function vudo_monotonic_now(): i64;
@external("vudo", "vudo_random") declare function vudo_random(): f64;
@external("vudo", "vudo_send")
declare function vudo_send(to: usize, toLen: i32, payload: usize, len: i32): i32;
@external("vudo", "vudo_recv") declare function vudo_recv(): usize;
@external("vudo", "vudo_free_message") declare function vudo_free_message(msg: usize): void;
@external("vudo", "vudo_panic") declare function vudo_panic(ptr: usize, len: i32): void;

function println(text: string): void {
  const bytes = String.UTF8.encode(text);
  vudo_println(changetype<usize>(bytes), bytes.byteLength);
}

// A length-prefixed UTF-8 string [len u32][bytes] read as an AssemblyScript string.
function readLp(lp: usize): string {
  return String.UTF8.decodeUnsafe(lp + 4, load<u32>(lp));
}

/** Prints "Hello, <name>!" (name: a length-prefixed string); returns its length in bytes. */
export function greet(name: usize): i32 {
  const text = "Hello, " + readLp(name) + "!";
  println(text);
  return String.UTF8.byteLength(text);
}

/** Clocks, random and logging: 1 when every value looked right. */
export function observe(): i32 {
  const wall = vudo_now();
  const m1 = vudo_monotonic_now();
  const m2 = vudo_monotonic_now();
  const r = vudo_random();
  const line = String.UTF8.encode("now=" + wall.toString() + " ok");
  vudo_log(1, changetype<usize>(line), line.byteLength);
  return i32(wall > 0 && m2 >= m1 && r >= 0.0 && r < 1.0);
}

/** Fails through AssemblyScript's assert (env.abort) unless value is positive. */
export function check(value: i32): void {
  assert(value > 0, "value must be positive");
}

/** Panics through vudo_panic. */
export function boom(): void {
  const text = String.UTF8.encode("boom from AssemblyScript");
  vudo_panic(changetype<usize>(text), text.byteLength);
}

/** Receives one message and answers its sender with "AS got: <payload>"; 0 if none. */
export function echo(): i32 {
  const msg = vudo_recv();
  if (msg == 0) return 0;
  const slen = load<u32>(msg);
  const sender = String.UTF8.decodeUnsafe(msg + 4, slen);
  const plen = load<u32>(msg + 4 + slen);
  const payload = String.UTF8.decodeUnsafe(msg + 8 + slen, plen);
  vudo_free_message(msg);
  const to = String.UTF8.encode(sender);
  const reply = String.UTF8.encode("AS got: " + payload);
  return vudo_send(changetype<usize>(to), to.byteLength, changetype<usize>(reply),
    reply.byteLength) == 0 ? 1 : -1;
}

// ---- guest side of the allocator tests ------------------------------------------------
const live = new Map<usize, ArrayBuffer>();

export function g_alloc(size: i32, pattern: i32): usize {
  const buf = new ArrayBuffer(size);
  const ptr = changetype<usize>(buf);
  memory.fill(ptr, <u8>pattern, size);
  live.set(ptr, buf);
  return ptr;
}

export function g_check(ptr: usize, size: i32, pattern: i32): i32 {
  for (let i = 0; i < size; i++) {
    if (load<u8>(ptr + i) != <u8>pattern) return 0;
  }
  return 1;
}

export function g_free(ptr: usize): void {
  live.delete(ptr);
}

/** Runs the garbage collector (the default runtime): unpinned host blocks may go, pinned stay. */
export function g_collect(): void {
  __collect();
}

function expected(i: u32, n: u32): u8 {
  return <u8>(i * 31 + n);
}

/** Receives one message, copies it into a guest buffer, checks both: its length, -1, or -2. */
export function recv_check(): i32 {
  const msg = vudo_recv();
  if (msg == 0) return -2;
  const slen = load<u32>(msg);
  const n = load<u32>(msg + 4 + slen);
  const payload = msg + 8 + slen;
  const copy = new ArrayBuffer(<i32>n);
  memory.copy(changetype<usize>(copy), payload, n);
  let result = <i32>n;
  for (let i: u32 = 0; i < n; i++) {
    if (load<u8>(payload + i) != expected(i, n) ||
        load<u8>(changetype<usize>(copy) + i) != expected(i, n)) {
      result = -1;
      break;
    }
  }
  vudo_free_message(msg);
  return result;
}
