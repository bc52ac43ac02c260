@external("vudo", "vudo_println")
declare function vudo_println(ptr: usize, len: i32): void;

// name: a length-prefixed string [len u32][UTF-8 bytes], as the host writes them.
export function greet(name: usize): void {
  const text = "Hello, " + String.UTF8.decodeUnsafe(name + 4, load<u32>(name)) + "!";
  const bytes = String.UTF8.encode(text);
  vudo_println(changetype<usize>(bytes), bytes.byteLength);
}
