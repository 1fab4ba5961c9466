// Answers Haraka's reverse-DNS hook locally: the benchmark runs without a
// resolver, and the other servers are configured without lookups too.
'use strict'
exports.hook_lookup_rdns = function (next) {
    next(OK, 'localhost')
}
