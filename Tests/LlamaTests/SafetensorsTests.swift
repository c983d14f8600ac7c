import Engine
import Formats
import Foundation
import XCTest

final class SafetensorsTests: XCTestCase {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("st-\(getpid())")
    override func setUpWithError() throws { try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true) }

    func testRoundTripAllDtypes() throws {
        let t = Tensor(shape: [2, 3], [1, -2.5, 0.1, 65504, 1e-6, 3])
        for dtype in DType.allCases {
            let url = dir.appendingPathComponent("\(dtype).safetensors")
            try SafetensorsFile.write([("a.weight", t)], dtype: dtype, to: url)
            let back = try SafetensorsFile(url).tensor("a.weight")
            XCTAssertEqual(back.shape, [2, 3])
            let copy = t.copy(); roundTrip(copy, through: dtype)
            XCTAssertEqual(back.array, copy.array, "\(dtype)")
        }
    }

    func raw(_ header: String, dataBytes: Int) throws -> URL {
        var d = Data()
        withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { d.append(contentsOf: $0) }
        d.append(Data(header.utf8)); d.append(Data(count: dataBytes))
        let url = dir.appendingPathComponent("bad-\(UUID().uuidString).safetensors")
        try d.write(to: url)
        return url
    }

    func testMalformedFilesAreClearErrors() throws {
        let cases: [(String, Int, String)] = [
            ("{not json", 0, "not valid JSON"),
            (#"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}"#, 4, "outside"),
            (#"{"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}"#, 8, "needs 12 bytes"),
            (#"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}"#, 12, "overlap"),
            (#"{"a": {"dtype": "Q9", "shape": [2], "data_offsets": [0, 8]}}"#, 8, "unknown dtype"),
        ]
        for (header, bytes, needle) in cases {
            let url = try raw(header, dataBytes: bytes)
            XCTAssertThrowsError(try SafetensorsFile(url)) { e in
                XCTAssertTrue("\(e)".contains(needle) && "\(e)".contains(url.path), "\"\(e)\" should say \(needle)")
            }
        }
        // A header length past the end of the file (truncated).
        let url = dir.appendingPathComponent("trunc.safetensors")
        var d = Data(); withUnsafeBytes(of: UInt64(1000).littleEndian) { d.append(contentsOf: $0) }
        try d.write(to: url)
        XCTAssertThrowsError(try SafetensorsFile(url)) { XCTAssertTrue("\($0)".contains("does not fit")) }
    }
}
