import Engine
import Evaluation
import Foundation
import Llama
import TestSupport
import XCTest

/// `eval streaming`'s losses: decoding in chunks gives the losses of decoding one token at a time,
/// every token is predicted once, and the window-only cache departs from sinks + window only once
/// tokens are evicted.
final class StreamingPerplexityTests: XCTestCase {
    func testChunkedDecodingEqualsOneTokenAtATime() throws {
        let model = try KVCacheTests.fixture("default_gqa")
        let ids = KVCacheTests.tokens(120, vocab: model.config.vocabSize, seed: 21)
        let policy = try CachePolicy(sinks: 3, window: 16)
        let single = try StreamingPerplexity.cachedLosses(model: model, tokens: ids, policy: policy, chunk: 1)
        let chunked = try StreamingPerplexity.cachedLosses(model: model, tokens: ids, policy: policy, chunk: 37)
        XCTAssertEqual(single.count, 119)
        assertClose(chunked.map(Float.init), single.map(Float.init), atol: 1e-4, rtol: 1e-4, "chunk 37 vs 1")
        // The same tokens predicted by a plain cache: equal until the first eviction (token 3 + 16 + 1), then not.
        let plain = try StreamingPerplexity.cachedLosses(model: model, tokens: ids, policy: .everything, chunk: 50)
        assertClose(Array(plain.prefix(19)).map(Float.init), Array(single.prefix(19)).map(Float.init), atol: 1e-4,
                    "before any eviction")
        XCTAssertGreaterThan(zip(plain.suffix(60), single.suffix(60)).map { abs($0 - $1) }.max()!, 1e-3)
    }

    func testFreshWindowsPredictEveryTokenOnceFromItsWindow() throws {
        let model = try KVCacheTests.fixture("default_gqa")
        let ids = KVCacheTests.tokens(50, vocab: model.config.vocabSize, seed: 22)
        let losses = try StreamingPerplexity.freshWindowLosses(model: model, tokens: ids, length: 16)
        XCTAssertEqual(losses.count, 49)
        // Target 20 (loss index 19) sits in the second window, which starts at token 15.
        let second = try model.tokenLosses(ids: Array(ids[15..<31]), context: try model.context(length: 16))
        XCTAssertEqual(losses[19], second[4], accuracy: 1e-5)
        let segments = StreamingPerplexity.segments(losses, size: 20)
        XCTAssertEqual(segments.map(\.end), [20, 40, 49])
        XCTAssertEqual(segments[2].nll, losses[40...].reduce(0, +) / 9, accuracy: 1e-9)
    }
}
