/**
 * Files that carry data after their ELF contents (PyInstaller's archive, a self-extracting
 * program's payload), found by reading the end of the file. A new segment appended at the end
 * would put itself after the payload, and the program would no longer find it (patchelf does
 * that). elfpatch refuses such a growth with `ELF_TRAILING_DATA` and leaves the file as it was, in
 * both write modes; edits that fit in the file are still made; zero padding is no payload.
 * The program (fixtures/payload/payload.c, built with gcc) reports whether it finds its payload.
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeTempDir, repoRoot } from "../support/fixtures.js";
import { has } from "../support/oracle.js";
import { patchJson as patch } from "../support/patch-cli.js";

const LONG = Array.from({ length: 80 }, (_, i) => `/nix/store/${String(i).padStart(3, "0")}-payload-dependency-xxxxxxxxxxxxxxxx/lib`).join(":");

const run = (file: string): string => execFileSync(file, { encoding: "utf8" }).trim();

describe.skipIf(!has("gcc"))("a program with an appended payload", () => {
  let T = "";
  let plain = "";
  let withPayload = "";
  let padded = "";

  beforeAll(() => {
    T = makeTempDir("elfpatch-payload-");
    plain = path.join(T, "plain");
    execFileSync("gcc", ["-O1", "-o", plain, path.join(repoRoot, "fixtures", "payload", "payload.c"), "-Wl,--enable-new-dtags", "-Wl,-rpath,/old/lib"]);
    // 100 KB of archive-like bytes, then the cookie the program looks for at the end.
    withPayload = path.join(T, "with-payload");
    fs.writeFileSync(withPayload, Buffer.concat([fs.readFileSync(plain), randomBytes(100_000), Buffer.from("ELFPATCH-PAYLOAD")]));
    fs.chmodSync(withPayload, 0o755);
    // Zero padding after the contents: no payload.
    padded = path.join(T, "padded");
    fs.writeFileSync(padded, Buffer.concat([fs.readFileSync(plain), Buffer.alloc(8192)]));
    fs.chmodSync(padded, 0o755);
    expect(run(withPayload)).toBe("payload found");
    expect(run(plain)).toBe("payload lost");
  });

  afterAll(() => {
    if (T) fs.rmSync(T, { recursive: true, force: true });
  });

  for (const mode of [[], ["--in-place"]]) {
    it(`a growth is refused with ELF_TRAILING_DATA and the file is untouched${mode.length ? " (--in-place)" : ""}`, () => {
      const file = path.join(T, `refused${mode.length}`);
      fs.copyFileSync(withPayload, file);
      const before = fs.readFileSync(file);
      const out = patch([...mode, "--force-rpath", "--add-rpath", LONG, file]);
      expect(out.status).toBe(1);
      expect(out.files[0]).toMatchObject({ status: "failed", error: { code: "ELF_TRAILING_DATA" } });
      expect(out.files[0]!.error!.message).toMatch(/data after its ELF contents/);
      expect(fs.readFileSync(file).equals(before)).toBe(true);
      expect(fs.readdirSync(T).filter((n) => n.includes("elfpatch"))).toEqual([]); // no temp file, no journal
      expect(run(file)).toBe("payload found");
    });
  }

  it("an edit that fits is made, and the payload stays where the program finds it", () => {
    const file = path.join(T, "fits");
    fs.copyFileSync(withPayload, file);
    const out = patch(["--force-rpath", "--set-rpath", "/new", file]);
    expect(out.status).toBe(0);
    expect(out.files[0]).toMatchObject({ status: "patched" });
    expect(out.files[0]!.strategy).not.toBe("new-segment");
    expect(execFileSync("readelf", ["-d", file], { encoding: "utf8" })).toMatch(/RPATH.*\[\/new\]/);
    expect(run(file)).toBe("payload found");
  });

  it("zero padding after the contents is no payload: the file grows and runs", () => {
    const file = path.join(T, "padded-grown");
    fs.copyFileSync(padded, file);
    const out = patch(["--force-rpath", "--add-rpath", LONG, file]);
    expect(out.status).toBe(0);
    expect(out.files[0]).toMatchObject({ status: "patched", strategy: "new-segment" });
    expect(run(file)).toBe("payload lost"); // it never had one; it runs
  });
});
