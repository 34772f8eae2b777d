//! Shared by the tar targets: header checksums recomputed, so mutations
//! reach the parsing behind them.

fn octal(f: &[u8]) -> u64 {
    f.iter()
        .skip_while(|&&b| b == b' ')
        .take_while(|&&b| (b'0'..=b'7').contains(&b))
        .fold(0u64, |v, &b| {
            v.saturating_mul(8).saturating_add((b - b'0') as u64)
        })
}

/// Recomputes the checksum of every header, walking headers by their size field.
pub fn fix_checksums(tar: &mut [u8]) {
    let mut pos = 0usize;
    while pos + 512 <= tar.len() {
        let block = &mut tar[pos..pos + 512];
        if block.iter().all(|&b| b == 0) {
            pos += 512;
            continue;
        }
        block[148..156].fill(b' ');
        let sum: u64 = block.iter().map(|&b| b as u64).sum();
        block[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        let size = if block[124] & 0x80 != 0 {
            0
        } else {
            octal(&block[124..136])
        };
        let data = size.div_ceil(512).saturating_mul(512);
        pos = pos
            .saturating_add(512)
            .saturating_add(data.min(usize::MAX as u64 / 2) as usize);
    }
}
