"""Each image's header checked on a data set's first pass, not on every epoch.

`imgclf.images.decode_image` checks an image's header before decoding it (the format, the
declared size against decompression bombs, animated WebPs, the frames of a GIF): about a hundred
small ops, a tenth of the CPU time of decoding a 224 px JPEG, every epoch. A training set's bytes
seldom change between epochs. `CheckedImages` remembers, for each element of a data set, the
64-bit fingerprint (`tf.fingerprint`) of the bytes that passed the checks and decoded; once a
pass has checked every element, the next ones decode each element's bytes unchecked if they have
that fingerprint (the same pixels), and refuse them if not. A pass that refused bytes for having
changed (a file rewritten under the same name) is followed by a checking pass again.

    >>> checked = CheckedImages(num_elements=len(paths))
    >>> trusting = map_of_trust(checked.on_passes(elements, trusting=True))
    >>> checking = checked.on_passes(map_of_check(elements), trusting=False)
    >>> batches = trusting.concatenate(checking)
    >>> checked.end_pass(missing_ids=[], transient=False, all_arrived=True)  # end of pass

Which of the two a pass runs is decided when it starts, not per element: tf.data's fast
single-threaded executor cannot run a branch in a map function.

The fingerprint is FarmHash's, not a cryptographic hash: bytes made to have the fingerprint of
the file they replace, written while the run trains, would be decoded unchecked. Anyone who can
write a training set's files while it trains can already make the model learn what they want.
"""

import tensorflow as tf

from imgclf.data.one_device import host_variable
from imgclf.images import check_image_bytes, decode_checked_image


def _fingerprint(image_bytes):
    return tf.bitcast(tf.fingerprint(tf.reshape(image_bytes, [1]))[0], tf.int64)


class CheckedImages:
    """The fingerprints of the checked bytes of a data set's elements, ids 0 to `num_elements - 1`,
    and whether the next pass may trust them. One per data set pipeline, in its process."""

    def __init__(self, num_elements):
        self.fingerprints = host_variable(tf.zeros([max(int(num_elements), 1)], tf.int64),
                                          "imgclf_checked_fingerprints")
        self.trusted = host_variable(False, "imgclf_checked_trusted")
        # Whether every element a trusting pass yields has a fingerprint (no element went missing
        # since the last checking pass began): then it filters nothing out.
        self.all_known = host_variable(False, "imgclf_checked_all_known")

    def check(self, element_id, image_bytes, image_size):
        """`imgclf.images.decode_image` of element `element_id`'s encoded bytes, their fingerprint
        recorded once they are decoded (the checks and the decoder raise for bad bytes)."""
        image = decode_checked_image(check_image_bytes(image_bytes), image_size)
        # 0 is the fingerprint of nothing checked: bytes fingerprinted 0 are never trusted.
        with tf.control_dependencies([image]):
            record = self.fingerprints.scatter_nd_update(
                [[element_id]], [_fingerprint(image_bytes)])
        with tf.control_dependencies([record]):
            return tf.identity(image)

    def trust(self, element_id, image_bytes, image_size):
        """`(image, known)`: `imgclf.images.decode_image` of element `element_id`'s encoded bytes
        if they are the bytes its checks let through (`known`), else of a 1 x 1 black PNG.

        It never raises for bytes (those it trusts decoded before), so that a trusting pass can
        decode straight into its batches (tf.data fuses the map with the batching, which saves a
        copy of each image); the batches leave out the images not `known`.
        """
        fingerprint = _fingerprint(image_bytes)
        known = (tf.equal(tf.gather(self.fingerprints, element_id), fingerprint)
                 & tf.not_equal(fingerprint, 0))
        return decode_checked_image(tf.where(known, image_bytes, _BLACK_PNG), image_size), known

    def on_passes(self, dataset, trusting):
        """`dataset` on the passes that trust the fingerprints (`trusting`), or on those that
        check the bytes; nothing on the others. Which one a pass is, is read when it starts: the
        pass after one that ended trusting its elements (`end_pass`) trusts them.

            >>> trusting = map_of_trust(checked.on_passes(elements, trusting=True))
            >>> checking = checked.on_passes(map_of_check(elements), trusting=False)
            >>> dataset = trusting.concatenate(checking)   # one of them yields, every pass

        `take(0)` never opens its input: on the other passes nothing of `dataset` runs, and its
        map functions are not even instantiated (decode_image's graph takes 50-70 ms to, every
        time a pass opens it).
        """

        def all_or_nothing(dataset, condition):
            return dataset.take(tf.where(condition, tf.constant(-1, tf.int64), 0))

        @tf.autograph.experimental.do_not_convert
        def one_pass(_):
            this_kind = tf.equal(self.trusted.read_value(), trusting)
            if not trusting:
                return all_or_nothing(dataset, this_kind)
            # Elements never checked through (bad bytes) are left out before decoding, as the
            # checking pass left them out before batching: the same batches in either pass
            # (workers that share the batches of one pass by data need that). A filter call per
            # element costs 3-4 % of a pass: only when some element lacks a fingerprint.
            all_known = self.all_known.read_value()
            known = dataset.filter(tf.autograph.experimental.do_not_convert(
                lambda element_id, *_: tf.not_equal(tf.gather(self.fingerprints, element_id), 0)))
            return all_or_nothing(dataset, this_kind & all_known).concatenate(
                all_or_nothing(known, this_kind & ~all_known))

        return tf.data.Dataset.from_tensors(0).flat_map(one_pass)

    def end_pass(self, missing_ids, transient, all_arrived):
        """Called at the end of each complete pass, with the ids of the elements that went missing
        in it for the first time, whether any of them for a reason other than their bytes
        (`transient`: an I/O error, bytes that changed, a batch lost with another element), and
        whether every element of the pass arrived (`all_arrived`: none of them had gone missing
        before either).

        Their fingerprints are forgotten: a trusting pass leaves them out until a checking pass
        decodes them again. The next pass trusts the fingerprints after a checking pass whose
        missing elements all had bad bytes, or after a trusting pass that lost nothing new.
        """
        if missing_ids:
            self.fingerprints.scatter_nd_update(
                [[int(i)] for i in missing_ids], tf.zeros([len(missing_ids)], tf.int64))
        trusted = bool(self.trusted.numpy())
        self.all_known.assign(all_arrived and (not trusted or bool(self.all_known.numpy())))
        self.trusted.assign(not missing_ids or (not trusted and not transient))


#: What `CheckedImages.trust` decodes in place of bytes it does not know (1 x 1, black).
_BLACK_PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00"
              b"\x00\x90wS\xde\x00\x00\x00\x0cIDAT\x08\x99c```\x00\x00\x00\x04\x00\x01\xa3\n\x15\xe3"
              b"\x00\x00\x00\x00IEND\xaeB`\x82")
