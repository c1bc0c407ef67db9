/*
 * dicom_gdcm.cpp - GDCM behind a C function, for the worker only. The one file
 * that includes GDCM headers. GDCM can abort() on malformed input: that is why
 * it runs in bin/medfed-dicom-worker and never in the daemon.
 *
 * What is decoded: one frame (a multi-frame object is "unsupported", since the
 * frames of a CT or MR series are not one radiograph), one sample per pixel,
 * MONOCHROME1 or MONOCHROME2, 8 or 16 bits allocated, signed or unsigned, in
 * the uncompressed, deflated, JPEG, JPEG-LS, JPEG 2000 and RLE transfer
 * syntaxes. Pixels then go through dicom_prep_run().
 */
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <istream>
#include <streambuf>
#include <string>
#include <vector>

#include <gdcmExplicitDataElement.h>
#include <gdcmImage.h>
#include <gdcmImplicitDataElement.h>
#include <gdcmImageReader.h>
#include <gdcmTrace.h>
#include <gdcmTransferSyntax.h>

extern "C" {
#include "imaging/dicom_decode.h"
#include "imaging/dicom_prep.h"
#include "common/util.h"
}

namespace {

/* A read-only, seekable stream over the request's bytes (no copy). */
class MemBuf : public std::streambuf {
public:
    MemBuf(const uint8_t *buf, size_t len)
    {
        char *p = const_cast<char *>(reinterpret_cast<const char *>(buf));
        setg(p, p, p + len);
    }

protected:
    pos_type seekoff(off_type off, std::ios_base::seekdir dir, std::ios_base::openmode) override
    {
        off_type size = egptr() - eback(), base = 0;
        if (dir == std::ios_base::cur) base = gptr() - eback();
        else if (dir == std::ios_base::end) base = size;
        if (off < -base || off > size - base) return pos_type(off_type(-1));
        setg(eback(), eback() + base + off, egptr());
        return pos_type(base + off);
    }
    pos_type seekpos(pos_type pos, std::ios_base::openmode which) override
    {
        return seekoff(off_type(pos), std::ios_base::beg, which);
    }
};

/* The value of a string element, without the padding; "" if absent. */
std::string tag_string(const gdcm::DataSet &ds, uint16_t group, uint16_t element)
{
    const gdcm::Tag tag(group, element);
    if (!ds.FindDataElement(tag)) return "";
    const gdcm::ByteValue *bv = ds.GetDataElement(tag).GetByteValue();
    if (!bv || !bv->GetPointer()) return "";
    std::string s(bv->GetPointer(), bv->GetLength());
    while (!s.empty() && (s.back() == ' ' || s.back() == '\0')) s.pop_back();
    size_t i = 0;
    while (i < s.size() && s[i] == ' ') i++;
    return s.substr(i);
}

/* The first value of a decimal string ("40\80" -> 40); 0 if absent or bad. */
int tag_first_double(const gdcm::DataSet &ds, uint16_t group, uint16_t element, double *out)
{
    std::string s = tag_string(ds, group, element);
    if (s.empty()) return 0;
    size_t bs = s.find('\\');
    if (bs != std::string::npos) s.resize(bs);
    while (!s.empty() && s.back() == ' ') s.pop_back();
    char *end = nullptr;
    double v = std::strtod(s.c_str(), &end);
    if (s.empty() || *end != '\0' || !std::isfinite(v)) return 0;
    *out = v;
    return 1;
}

void copy_key(char dst[DICOM_KEY_MAX], const std::string &s)
{
    dst[0] = '\0';
    if (s.size() >= DICOM_KEY_MAX) return; /* too long to be a key: unmatched */
    for (char ch : s)
        if ((unsigned char)ch < 0x20 || (unsigned char)ch > 0x7e) return;
    std::memcpy(dst, s.data(), s.size());
    dst[s.size()] = '\0';
}

/* The encoded length of a data set, in 64 bits: GDCM's own sum is 32-bit
 * and wraps on a forged length. An element's header size is its encoded
 * length minus its value length, modulo 2^32. */
template <typename TDE> uint64_t encoded_length(const gdcm::DataSet &ds)
{
    uint64_t n = 0;
    for (const gdcm::DataElement &de : ds.GetDES()) {
        uint32_t all = (uint32_t)de.GetLength<TDE>();
        const gdcm::VL &vl = de.GetVL();
        if (vl.IsUndefined()) n += all;
        else n += (uint32_t)(all - (uint32_t)vl) + (uint64_t)(uint32_t)vl;
    }
    return n;
}

/* GDCM reads a file cut short without complaint (the missing bytes are
 * zeros): the elements it parsed must fit in the bytes there are. */
bool truncated(const gdcm::File &file, size_t len)
{
    const gdcm::FileMetaInformation &h = file.GetHeader();
    const gdcm::TransferSyntax &ts = h.GetDataSetTransferSyntax();
    if (ts == gdcm::TransferSyntax::DeflatedExplicitVRLittleEndian) return false; /* compressed */
    const gdcm::DataSet &ds = file.GetDataSet();
    uint64_t need = h.GetPreamble().IsEmpty() ? 0 : 132;
    need += encoded_length<gdcm::ExplicitDataElement>(h);
    need += ts.IsImplicit() ? encoded_length<gdcm::ImplicitDataElement>(ds)
                            : encoded_length<gdcm::ExplicitDataElement>(ds);
    return need > len;
}

/* Before GDCM sees it (it asserts on some garbage): a preamble with "DICM",
 * or a dataset that starts like one (an even group up to 0x0008). */
bool looks_like_dicom(const uint8_t *buf, size_t len)
{
    if (len >= 132 && std::memcmp(buf + 128, "DICM", 4) == 0) return true;
    if (len < 8) return false;
    unsigned group = buf[0] | buf[1] << 8, be = buf[0] << 8 | buf[1];
    return (group >= 2 && group <= 8 && group % 2 == 0) || (be >= 2 && be <= 8 && be % 2 == 0);
}

bool ts_decodable(const gdcm::TransferSyntax &ts)
{
    switch ((gdcm::TransferSyntax::TSType)ts) {
    case gdcm::TransferSyntax::ImplicitVRLittleEndian:
    case gdcm::TransferSyntax::ExplicitVRLittleEndian:
    case gdcm::TransferSyntax::DeflatedExplicitVRLittleEndian:
    case gdcm::TransferSyntax::ExplicitVRBigEndian:
    case gdcm::TransferSyntax::JPEGBaselineProcess1:
    case gdcm::TransferSyntax::JPEGExtendedProcess2_4:
    case gdcm::TransferSyntax::JPEGLosslessProcess14:
    case gdcm::TransferSyntax::JPEGLosslessProcess14_1:
    case gdcm::TransferSyntax::JPEGLSLossless:
    case gdcm::TransferSyntax::JPEGLSNearLossless:
    case gdcm::TransferSyntax::JPEG2000Lossless:
    case gdcm::TransferSyntax::JPEG2000:
    case gdcm::TransferSyntax::RLELossless: return true;
    default: return false;
    }
}

dicom_status_t fail(dicom_status_t s, char *reason, size_t reasonlen, const char *why)
{
    util_seterr(reason, reasonlen, "%s", why);
    return s;
}

dicom_status_t decode(const uint8_t *buf, size_t len, const dicom_prep_t *prep, dicom_image_t *out,
                      char *reason, size_t reasonlen)
{
    if (!looks_like_dicom(buf, len))
        return fail(DICOM_SKIP_MALFORMED, reason, reasonlen, "not a DICOM file");
    MemBuf mb(buf, len);
    std::istream is(&mb);
    gdcm::ImageReader reader;
    reader.SetStream(is);
    if (!reader.Read()) return fail(DICOM_SKIP_MALFORMED, reason, reasonlen, "not a DICOM image");
    const gdcm::DataSet &ds = reader.GetFile().GetDataSet();
    copy_key(out->accession, tag_string(ds, 0x0008, 0x0050));
    copy_key(out->sop_uid, tag_string(ds, 0x0008, 0x0018));
    if (truncated(reader.GetFile(), len))
        return fail(DICOM_SKIP_MALFORMED, reason, reasonlen, "truncated");

    if (!ds.FindDataElement(gdcm::Tag(0x7fe0, 0x0010)))
        return fail(DICOM_SKIP_MALFORMED, reason, reasonlen, "no pixel data");
    if (tag_string(ds, 0x0028, 0x0301) == "YES")
        return fail(DICOM_SKIP_BURNED_IN, reason, reasonlen, "burned-in annotation");

    const gdcm::Image &img = reader.GetImage();
    const gdcm::PixelFormat &pf = img.GetPixelFormat();
    gdcm::PhotometricInterpretation::PIType pi = img.GetPhotometricInterpretation().GetType();
    if (pf.GetSamplesPerPixel() != 1 || (pi != gdcm::PhotometricInterpretation::MONOCHROME1 &&
                                         pi != gdcm::PhotometricInterpretation::MONOCHROME2))
        return fail(DICOM_SKIP_UNSUPPORTED, reason, reasonlen, "not grayscale");
    const unsigned int *dims = img.GetDimensions();
    unsigned nd = img.GetNumberOfDimensions();
    if (!dims || nd < 2 || nd > 3 || (nd == 3 && dims[2] != 1))
        return fail(DICOM_SKIP_UNSUPPORTED, reason, reasonlen, "not a single frame");
    if (pf.GetBitsAllocated() != 8 && pf.GetBitsAllocated() != 16)
        return fail(DICOM_SKIP_UNSUPPORTED, reason, reasonlen, "bit depth not 8 or 16");
    if (pf.GetBitsStored() < 1 || pf.GetBitsStored() > pf.GetBitsAllocated() ||
        pf.GetHighBit() != pf.GetBitsStored() - 1 || pf.GetPixelRepresentation() > 1)
        return fail(DICOM_SKIP_UNSUPPORTED, reason, reasonlen, "pixel layout not supported");
    if (!ts_decodable(img.GetTransferSyntax()))
        return fail(DICOM_SKIP_UNSUPPORTED, reason, reasonlen, "transfer syntax not supported");
    if (dims[0] < 1 || dims[1] < 1 || (uint64_t)dims[0] * dims[1] > DICOM_PREP_MAX_PIXELS)
        return fail(DICOM_SKIP_UNSUPPORTED, reason, reasonlen, "image size out of range");

    size_t need = (size_t)dims[0] * dims[1] * (pf.GetBitsAllocated() / 8);
    if (img.GetBufferLength() != need)
        return fail(DICOM_SKIP_MALFORMED, reason, reasonlen, "pixel data size mismatch");
    std::vector<char> pixels(need);
    if (!img.GetBuffer(pixels.data()))
        return fail(DICOM_SKIP_MALFORMED, reason, reasonlen, "pixel data could not be decoded");

    dicom_raw_t raw = {};
    raw.cols = (int)dims[0];
    raw.rows = (int)dims[1];
    raw.bits_allocated = pf.GetBitsAllocated();
    raw.bits_stored = pf.GetBitsStored();
    raw.is_signed = pf.GetPixelRepresentation() == 1;
    raw.monochrome1 = pi == gdcm::PhotometricInterpretation::MONOCHROME1;
    raw.slope = 1.0;
    raw.intercept = 0.0;
    tag_first_double(ds, 0x0028, 0x1053, &raw.slope);
    tag_first_double(ds, 0x0028, 0x1052, &raw.intercept);
    raw.has_window = tag_first_double(ds, 0x0028, 0x1050, &raw.center) &&
                     tag_first_double(ds, 0x0028, 0x1051, &raw.width);
    raw.data = pixels.data();
    raw.len = pixels.size();
    char why[128];
    if (dicom_prep_run(&raw, prep, out->pixels, why, sizeof why) < 0)
        return fail(DICOM_SKIP_UNSUPPORTED, reason, reasonlen, why);
    return DICOM_OK;
}

} // namespace

extern "C" void dicom_gdcm_init(void)
{
    gdcm::Trace::SetWarning(false);
    gdcm::Trace::SetDebug(false);
    gdcm::Trace::SetError(false);
}

extern "C" dicom_status_t dicom_gdcm_decode(const uint8_t *buf, size_t len,
                                            const dicom_prep_t *prep, dicom_image_t *out,
                                            char *reason, size_t reasonlen)
{
    try {
        return decode(buf, len, prep, out, reason, reasonlen);
    } catch (const std::bad_alloc &) {
        return fail(DICOM_SKIP_UNSUPPORTED, reason, reasonlen, "out of memory");
    } catch (...) {
        return fail(DICOM_SKIP_MALFORMED, reason, reasonlen, "decoder error");
    }
}
