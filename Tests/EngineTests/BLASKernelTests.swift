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
}
