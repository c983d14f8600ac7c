import Engine
import XCTest

/// The instruction set and thread count LongTune takes from the machine (docs/CONVENTIONS.md §18).
final class CPUTests: XCTestCase {
    let avx512: Set<String> = ["sse2", "avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512_bf16"]

    func testInstructionSetFromFlags() {
        XCTAssertEqual(CPU.isa(of: avx512), .avx512)
        XCTAssertEqual(CPU.isa(of: ["sse2", "avx2", "fma"]), .avx2)
        XCTAssertEqual(CPU.isa(of: ["avx2", "avx512f", "avx512cd"]), .avx2, "Knights Landing lacks BW/DQ/VL")
        let forced = CPU.effectiveFlags(detected: avx512, isa: .avx2)
        XCTAssertEqual(forced, ["sse2", "avx2", "fma"], "LONGTUNE_ISA=avx2 removes every AVX-512 flag")
        XCTAssertEqual(CPU.effectiveFlags(detected: avx512, isa: nil), avx512)
        XCTAssertEqual(CPU.forcedISA(["LONGTUNE_ISA": "AVX2"]), .avx2)
        XCTAssertThrowsError(try CPU.checkEnvironment(["LONGTUNE_ISA": "sse4"]))
    }

    func testThreadCountFollowsTheLimits() {
        func count(_ requested: Int? = nil, online: Int = 16, affinity: Int = 16, quota: Double? = nil,
                   ranks: Int = 1) -> CPU.Threads {
            CPU.threads(requested: requested, online: online, affinity: affinity, quota: quota, localRanks: ranks)
        }
        XCTAssertEqual(count(), CPU.Threads(count: 16, source: "all 16 CPUs"))
        XCTAssertEqual(count(affinity: 2), CPU.Threads(count: 2, source: "affinity mask (2 of 16 CPUs)"), "taskset -c 0,1")
        XCTAssertEqual(count(affinity: 1).count, 1, "taskset -c 0")
        XCTAssertEqual(count(quota: 1.5), CPU.Threads(count: 2, source: "cgroup CPU quota (1.5 CPUs)"), "docker --cpus 1.5")
        XCTAssertEqual(count(quota: 0.25).count, 1)
        XCTAssertEqual(count(affinity: 4, quota: 8).count, 4, "the smaller limit")
        XCTAssertEqual(count(ranks: 2), CPU.Threads(count: 8, source: "all 16 CPUs, shared by 2 MPI ranks"))
        XCTAssertEqual(count(affinity: 1, ranks: 2).count, 1, "a rank mpirun bound to a core runs on that core")
        XCTAssertEqual(count(affinity: 8, ranks: 2).count, 8, "a rank bound to 8 cores has them to itself")
        XCTAssertEqual(count(3, affinity: 1), CPU.Threads(count: 3, source: "LONGTUNE_THREADS"))
        XCTAssertEqual(count(online: 4, affinity: 0).count, 4, "an unreadable mask: every online CPU")
    }

    func testThreadsVariableIsChecked() throws {
        for bad in ["0", "-2", "two", "", "1.5"] {
            XCTAssertThrowsError(try CPU.checkEnvironment(["LONGTUNE_THREADS": bad]), bad) { error in
                XCTAssertTrue("\(error)".contains("LONGTUNE_THREADS"), "\(error)")
            }
        }
        XCTAssertNoThrow(try CPU.checkEnvironment(["LONGTUNE_THREADS": "4"]))
    }

    func testCgroupQuota() throws {
        XCTAssertNil(CPU.quota(cgroupV2: "max 100000\n"))
        XCTAssertEqual(CPU.quota(cgroupV2: "150000 100000\n"), 1.5)
        XCTAssertNil(CPU.quota(cgroupV2: "garbage"))
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("cgroup-\(getpid())")
        defer { try? FileManager.default.removeItem(at: root) }
        try FileManager.default.createDirectory(at: root.appendingPathComponent("cpu"), withIntermediateDirectories: true)
        try "-1\n".write(to: root.appendingPathComponent("cpu/cpu.cfs_quota_us"), atomically: true, encoding: .utf8)
        try "100000\n".write(to: root.appendingPathComponent("cpu/cpu.cfs_period_us"), atomically: true, encoding: .utf8)
        XCTAssertNil(CPU.cgroupQuota(root: root.path), "cgroup v1 without a quota")
        try "300000\n".write(to: root.appendingPathComponent("cpu/cpu.cfs_quota_us"), atomically: true, encoding: .utf8)
        XCTAssertEqual(CPU.cgroupQuota(root: root.path), 3, "cgroup v1 quota")
        try "200000 100000\n".write(to: root.appendingPathComponent("cpu.max"), atomically: true, encoding: .utf8)
        XCTAssertEqual(CPU.cgroupQuota(root: root.path), 2, "cgroup v2 first")
    }

    /// The engine's pool runs no more than `Parallel.threads` iterations at once, whatever the dispatch pool's width.
    func testForEachRunsAtMostThreadsAtOnce() {
        let lock = NSLock()
        var running = 0, most = 0, done = [Bool](repeating: false, count: 200)
        Parallel.forEach(200) { i in
            lock.lock(); running += 1; most = max(most, running); lock.unlock()
            usleep(200)
            lock.lock(); running -= 1; done[i] = true; lock.unlock()
        }
        XCTAssertTrue(done.allSatisfy { $0 })
        XCTAssertLessThanOrEqual(most, Parallel.threads)
    }
}
