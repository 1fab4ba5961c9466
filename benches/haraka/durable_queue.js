// Queue plugin for the sluice peer benchmark (benches/peers.py): Haraka
// answers 250 only after the message is in its own file, fsync()ed and
// renamed into <dir>/new, so it is compared with sluice on equal terms
// (every 250 durable). The directory comes from SLUICE_PEER_SPOOL.
'use strict'
const fs = require('node:fs')
const path = require('node:path')

let counter = 0

exports.register = function () {
    this.dir = process.env.SLUICE_PEER_SPOOL
    if (!this.dir) throw new Error('SLUICE_PEER_SPOOL is not set')
    fs.mkdirSync(path.join(this.dir, 'tmp'), { recursive: true })
    fs.mkdirSync(path.join(this.dir, 'new'), { recursive: true })
}

exports.hook_queue = function (next, connection) {
    const txn = connection && connection.transaction
    if (!txn) return next()
    const name = `${process.pid}.${counter++}.${txn.uuid}`
    const tmp = path.join(this.dir, 'tmp', name)
    const done = path.join(this.dir, 'new', name)
    const refuse = (err) => {
        connection.logerror(this, `could not store the message: ${err}`)
        next(DENYSOFT, 'could not store the message')
    }
    fs.open(tmp, 'wx', 0o600, (err, fd) => {
        if (err) return refuse(err)
        const out = fs.createWriteStream(null, { fd, autoClose: false })
        out.once('error', refuse)
        out.once('finish', () =>
            fs.fsync(fd, (e1) => {
                if (e1) return refuse(e1)
                fs.close(fd, (e2) => {
                    if (e2) return refuse(e2)
                    fs.rename(tmp, done, (e3) => (e3 ? refuse(e3) : next(OK)))
                })
            }),
        )
        txn.message_stream.pipe(out)
    })
}
