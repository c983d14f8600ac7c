import Foundation
import XCTest

/// `longtune bench machine` under the limits users set (docs/CONVENTIONS.md §18): the thread count follows
/// `taskset`, `--threads` and LONGTUNE_THREADS; LONGTUNE_ISA=avx2 selects every AVX2 path.
final class MachineCommandTests: XCTestCase {
    func machine(_ arguments: [String], prefix: [String] = [], environment: [String: String] = [:]) throws
        -> (status: Int32, json: [String: Any], stderr: String) {
        let exe = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("longtune")
        guard FileManager.default.fileExists(atPath: exe.path) else { throw XCTSkip("longtune binary not built next to the tests") }
        let p = Process(), out = Pipe(), err = Pipe()
        if prefix.isEmpty {
            p.executableURL = exe
            p.arguments = arguments
        } else {
            p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            p.arguments = prefix + [exe.path] + arguments
        }
        p.environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("LONGTUNE_") }
            .merging(environment) { $1 }
        p.standardOutput = out; p.standardError = err
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let json = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:]
        return (p.terminationStatus, json, String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self))
    }

    func testTasksetToOneCPURunsOneThread() throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/taskset") else { throw XCTSkip("no taskset") }
        let r = try machine(["bench", "machine", "--json"], prefix: ["taskset", "-c", "0"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.json["threads"] as? Int, 1, "\(r.json)")
        if ProcessInfo.processInfo.processorCount > 1 {
            XCTAssertEqual(r.json["threads_source"] as? String,
                           "affinity mask (1 of \(ProcessInfo.processInfo.processorCount) CPUs)")
        }
    }

    func testThreadsOptionAndVariable() throws {
        let option = try machine(["--threads", "1", "bench", "machine", "--json"])
        XCTAssertEqual(option.json["threads"] as? Int, 1, option.stderr)
        XCTAssertEqual(option.json["threads_source"] as? String, "LONGTUNE_THREADS")
        let after = try machine(["bench", "machine", "--json", "--threads=3"])
        XCTAssertEqual(after.json["threads"] as? Int, 3, "the option anywhere on the line: \(after.stderr)")
        let variable = try machine(["bench", "machine", "--json"], environment: ["LONGTUNE_THREADS": "2"])
        XCTAssertEqual(variable.json["threads"] as? Int, 2, variable.stderr)
    }

    /// `bench train --profile`: every phase of a step is timed, and the phases with the rest make up the step.
    func testTrainingStepProfile() throws {
        let r = try machine(["bench", "train", "--model", "builtin:tiny", "--context", "128", "--steps", "1", "--warmup", "0",
                             "--profile", "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let profile = try XCTUnwrap(r.json["profile_seconds_per_step"] as? [String: Double], "\(r.json)")
        for key in ["frozen_products", "lora_products", "attention_forward", "attention_backward", "rowwise",
                    "lm_head_loss", "optimizer"] {
            XCTAssertGreaterThan(profile[key] ?? 0, 0, key)
        }
        let parts = profile.filter { !["step", "parallel_loops_with_idle_threads"].contains($0.key) }.values.reduce(0, +)
        XCTAssertEqual(parts, profile["step"]!, accuracy: 1e-6 + 1e-3 * profile["step"]!, "the phases make up the step")
    }

    func testForcedAVX2Paths() throws {
        let r = try machine(["bench", "machine", "--json"], environment: ["LONGTUNE_ISA": "avx2"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.json["isa"] as? String, "avx2")
        XCTAssertEqual(r.json["avx512_bf16"] as? Bool, false)
        XCTAssertEqual(r.json["attention_tiles"] as? String, "6×16 (AVX2)")
        XCTAssertEqual(r.json["bf16_gemm"] as? String, "widened to fp32 + sgemm")
        XCTAssertEqual((r.json["blas_core"] as? String)?.lowercased(), "haswell", "OpenBLAS's AVX2 kernels: \(r.json)")
        let bad = try machine(["bench", "machine"], environment: ["LONGTUNE_ISA": "sse"])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.stderr.contains("LONGTUNE_ISA=sse: expected avx2"), bad.stderr)
    }
}
