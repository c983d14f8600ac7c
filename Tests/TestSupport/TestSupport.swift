import Foundation
import XCTest

/// Helpers shared by the test targets.

/// The repository's root directory.
public let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent()

/// Fails unless |a − b| ≤ atol + rtol·|b| element by element; names the worst element.
public func assertClose(_ a: [Float], _ b: [Float], atol: Float = 0, rtol: Float = 0, _ what: String,
                        file: StaticString = #filePath, line: UInt = #line) {
    guard a.count == b.count else { return XCTFail("\(what): \(a.count) vs \(b.count) values", file: file, line: line) }
    var worst: (Int, Float) = (0, 0)
    for i in 0..<a.count {
        let excess = abs(a[i] - b[i]) - (atol + rtol * abs(b[i]))
        if excess > worst.1 || excess.isNaN { worst = (i, excess.isNaN ? .infinity : excess) }
    }
    if worst.1 > 0 {
        let i = worst.0
        XCTFail("\(what): element \(i): \(a[i]) vs \(b[i]) (tolerance \(atol) + \(rtol)·|ref|)", file: file, line: line)
    }
}

/// ‖a − b‖ / ‖b‖ over whole tensors.
public func relativeDifference(_ a: [Float], _ b: [Float]) -> Double {
    precondition(a.count == b.count, "relativeDifference: \(a.count) vs \(b.count) values")
    var diff = 0.0, norm = 0.0
    for (x, y) in zip(a, b) {
        diff += Double(x - y) * Double(x - y)
        norm += Double(y) * Double(y)
    }
    return (diff / max(norm, 1e-300)).squareRoot()
}

/// Fails unless `body` throws an error whose text contains every needle.
public func expectError(_ needles: [String], file: StaticString = #filePath, line: UInt = #line,
                        _ body: () throws -> Void) {
    XCTAssertThrowsError(try body(), file: file, line: line) { e in
        for n in needles { XCTAssertTrue("\(e)".contains(n), "error \"\(e)\" should mention \"\(n)\"", file: file, line: line) }
    }
}

/// A fresh directory under the system's temporary directory, removed by `remove()`.
public struct TemporaryDirectory {
    public let url: URL
    public init(_ prefix: String = "longtune-test") throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }
    public func path(_ name: String) -> URL { url.appendingPathComponent(name) }
    public func remove() { try? FileManager.default.removeItem(at: url) }
}
