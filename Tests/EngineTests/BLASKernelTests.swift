import Engine
import XCTest

final class BLASKernelTests: XCTestCase {
    func testAVX512FamilyFromCPUFlags() {
        let skylake: Set<String> = ["sse2", "avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"]
        XCTAssertEqual(BLASKernel.bestFamily(cpuFlags: skylake), "SKYLAKEX")
        XCTAssertEqual(BLASKernel.bestFamily(cpuFlags: skylake.union(["avx512_bf16"])), "COOPERLAKE")
        XCTAssertNil(BLASKernel.bestFamily(cpuFlags: ["sse2", "avx2", "fma"]), "an AVX2-only CPU keeps its kernel")
        XCTAssertNil(BLASKernel.bestFamily(cpuFlags: ["avx512f", "avx512cd"]), "Knights Landing lacks BW/DQ/VL: no SkylakeX kernel")
    }

    func testEnvironmentChanges() {
        let cpu: Set<String> = ["avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"]
        let pinned = BLASKernel.wantedChanges(environment: ["OPENBLAS_CORETYPE": "Haswell"], loadedFamily: "Haswell", cpuFlags: cpu)
        XCTAssertEqual(pinned["OPENBLAS_CORETYPE"], "SKYLAKEX")
        XCTAssertEqual(pinned["LONGTUNE_REPLACED_OPENBLAS_CORETYPE"], "Haswell")
        XCTAssertEqual(pinned["OPENBLAS_THREAD_TIMEOUT"], "18")
        XCTAssertEqual(pinned["GOMP_SPINCOUNT"], "10000")
        XCTAssertEqual(pinned["OPENBLAS_NUM_THREADS"], String(CPU.threads.count), "OpenBLAS runs the engine's count")
        XCTAssertEqual(pinned["OMP_NUM_THREADS"], String(CPU.threads.count), "so does oneDNN's OpenMP")
        let user = ["OPENBLAS_THREAD_TIMEOUT": "28", "OMP_WAIT_POLICY": "active", "OPENBLAS_NUM_THREADS": "3",
                    "OMP_NUM_THREADS": "3"]
        XCTAssertEqual(BLASKernel.wantedChanges(environment: user, loadedFamily: "SkylakeX", cpuFlags: cpu), [:],
                       "a user's timeout, OpenMP policy, thread counts and an AVX-512 kernel need no change")
        let forced = BLASKernel.wantedChanges(environment: [:], loadedFamily: "Cooperlake",
                                              cpuFlags: CPU.effectiveFlags(detected: cpu, isa: .avx2))
        XCTAssertEqual(forced["OPENBLAS_CORETYPE"], "HASWELL", "LONGTUNE_ISA=avx2 loads the AVX2 kernels")
        XCTAssertEqual(BLASKernel.wantedChanges(environment: ["LONGTUNE_OPENBLAS_CONFIGURED": "1"], loadedFamily: "Haswell", cpuFlags: cpu), [:],
                       "after the re-exec nothing changes again")
        XCTAssertEqual(BLASKernel.wantedChanges(environment: ["LONGTUNE_KEEP_OPENBLAS_ENV": "1"], loadedFamily: "Haswell", cpuFlags: cpu), [:])
        XCTAssertNil(BLASKernel.wantedChanges(environment: [:], loadedFamily: "Haswell", cpuFlags: ["avx2"])["OPENBLAS_CORETYPE"])
        // A CPU newer than OpenBLAS 0.3.21 knows (Emerald Rapids) loads Prescott: AVX-512 natively, Haswell under avx2.
        XCTAssertEqual(BLASKernel.wantedChanges(environment: [:], loadedFamily: "Prescott",
                                                cpuFlags: cpu)["OPENBLAS_CORETYPE"], "SKYLAKEX")
        let newer = BLASKernel.wantedChanges(environment: [:], loadedFamily: "Prescott",
                                             cpuFlags: CPU.effectiveFlags(detected: cpu.union(["avx2", "fma"]), isa: .avx2))
        XCTAssertEqual(newer["OPENBLAS_CORETYPE"], "HASWELL")
        XCTAssertEqual(newer["LONGTUNE_REPLACED_OPENBLAS_CORETYPE"], "Prescott")
        XCTAssertNil(BLASKernel.wantedChanges(environment: [:], loadedFamily: "Zen",
                                              cpuFlags: ["avx2", "fma"])["OPENBLAS_CORETYPE"], "Zen's kernels are AVX2's")
    }
}
