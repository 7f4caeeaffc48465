/** Robust evaluation: the protocol, sanity checks, reports and sharding. */
export * from "./protocol.ts";
export * from "./sanity.ts";
export * from "./report.ts";
export * from "./shard.ts";
