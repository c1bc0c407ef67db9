/*
 * model.cpp - the LibTorch side of model.h.
 *
 * This is the only C++ file in medfed. Everything it exports is extern "C"
 * and every exported body runs inside guarded(), so no C++ exception ever
 * reaches C code: errors become -1 (or NULL) plus a message in the model's
 * error buffer.
 *
 * Two architectures, written out by hand because LibTorch has no torchvision:
 *  - "cnn": the CNN of the FedAvg paper (McMahan et al. 2017).
 *  - "resnet18": torchvision's ResNet-18 with the same layout, parameter
 *    names, construction order and initialisation, so a Python model built
 *    after torch.manual_seed(seed) starts from the same weights (see
 *    tests/bench/torch_ref.py, which mirrors this file).
 *
 * Behaviour not spelled out in the header:
 *  - model_errmsg() holds the reason for the last failed call; every fallible
 *    call clears it on entry, so it is "" after a success.
 *  - The progress callback gets a 1-based epoch and the images done *within*
 *    that epoch; the last call of an epoch has images_done == data->n. It is
 *    called at most once per mini-batch.
 *  - model_train fails ("training diverged") as soon as a batch loss is not
 *    finite, rather than hand NaN weights to the federation. A failure
 *    mid-training (divergence, caller stop) leaves the weights as the steps
 *    done so far made them (possibly non-finite after divergence): reload
 *    them with model_set_params() if that matters.
 *  - res->correct from model_train counts training-mode predictions made
 *    before each step, over the last epoch (a cheap running accuracy).
 *  - A model is not thread-safe; different models may be used from different
 *    threads. model_new() serialises on the global RNG it seeds.
 */
#include "model/model.h"

#include <torch/torch.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <atomic>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <exception>
#include <mutex>
#include <new>
#include <string>
#include <vector>

/* ---- architectures ------------------------------------------------------ */

namespace {

/* What both architectures look like to the rest of this file. */
struct Net : torch::nn::Module {
    virtual torch::Tensor forward(torch::Tensor x) = 0;
};

/* FedAvg CNN. Members are declared (and so constructed, and so drawn from
 * the RNG) in the same order as the Python reference creates them. */
struct Cnn : Net {
    torch::nn::Conv2d conv1, conv2;
    torch::nn::Linear fc1, fc2;

    Cnn(int64_t in_ch, int64_t h, int64_t w, int64_t classes)
        : conv1(torch::nn::Conv2dOptions(in_ch, 32, 5).padding(2)),
          conv2(torch::nn::Conv2dOptions(32, 64, 5).padding(2)),
          /* each 2x2 max-pool floors: floor(floor(h/2)/2) == h/4 */
          fc1(64 * (h / 4) * (w / 4), 512),
          fc2(512, classes)
    {
        register_module("conv1", conv1);
        register_module("conv2", conv2);
        register_module("fc1", fc1);
        register_module("fc2", fc2);
    }

    torch::Tensor forward(torch::Tensor x) override
    {
        x = torch::max_pool2d(torch::relu(conv1(x)), 2);
        x = torch::max_pool2d(torch::relu(conv2(x)), 2);
        x = torch::relu(fc1(x.flatten(1)));
        return fc2(x);
    }
};

torch::nn::Conv2d conv_nobias(int64_t in, int64_t out, int64_t k, int64_t stride, int64_t pad)
{
    return torch::nn::Conv2d(
        torch::nn::Conv2dOptions(in, out, k).stride(stride).padding(pad).bias(false));
}

/* torchvision's BasicBlock (expansion 1). downsample is built by the caller
 * *before* the block, as torchvision does, and registered last. */
struct BasicBlockImpl : torch::nn::Module {
    torch::nn::Conv2d conv1;
    torch::nn::BatchNorm2d bn1;
    torch::nn::Conv2d conv2;
    torch::nn::BatchNorm2d bn2;
    torch::nn::Sequential downsample;

    BasicBlockImpl(int64_t in, int64_t planes, int64_t stride, torch::nn::Sequential ds)
        : conv1(conv_nobias(in, planes, 3, stride, 1)),
          bn1(planes),
          conv2(conv_nobias(planes, planes, 3, 1, 1)),
          bn2(planes),
          downsample(std::move(ds))
    {
        register_module("conv1", conv1);
        register_module("bn1", bn1);
        register_module("conv2", conv2);
        register_module("bn2", bn2);
        if (!downsample.is_empty())
            register_module("downsample", downsample);
    }

    torch::Tensor forward(torch::Tensor x)
    {
        torch::Tensor out = torch::relu(bn1(conv1(x)));
        out = bn2(conv2(out));
        torch::Tensor identity = downsample.is_empty() ? x : downsample->forward(x);
        return torch::relu(out + identity);
    }
};

struct ResNet18 : Net {
    bool small_input;            /* 3x3 stride-1 stem, no max-pool */
    int64_t inplanes = 64;
    torch::nn::Conv2d conv1{nullptr};
    torch::nn::BatchNorm2d bn1{nullptr};
    torch::nn::Sequential layer1{nullptr}, layer2{nullptr}, layer3{nullptr}, layer4{nullptr};
    torch::nn::Linear fc{nullptr};

    ResNet18(int64_t in_ch, int64_t h, int64_t w, int64_t classes) : small_input(h < 64 || w < 64)
    {
        conv1 = register_module("conv1", small_input ? conv_nobias(in_ch, 64, 3, 1, 1)
                                                     : conv_nobias(in_ch, 64, 7, 2, 3));
        bn1 = register_module("bn1", torch::nn::BatchNorm2d(64));
        layer1 = register_module("layer1", make_layer(64, 1));
        layer2 = register_module("layer2", make_layer(128, 2));
        layer3 = register_module("layer3", make_layer(256, 2));
        layer4 = register_module("layer4", make_layer(512, 2));
        fc = register_module("fc", torch::nn::Linear(512, classes));

        /* torchvision re-initialises every conv after construction, in module
         * order; batch-norm already starts at weight 1, bias 0. */
        for (const auto &mod : modules(/*include_self=*/false)) {
            if (auto *conv = mod->as<torch::nn::Conv2dImpl>())
                torch::nn::init::kaiming_normal_(conv->weight, 0.0, torch::kFanOut, torch::kReLU);
        }
    }

    torch::nn::Sequential make_layer(int64_t planes, int64_t stride)
    {
        torch::nn::Sequential layer;
        torch::nn::Sequential ds{nullptr};
        if (stride != 1 || inplanes != planes)
            ds = torch::nn::Sequential(conv_nobias(inplanes, planes, 1, stride, 0),
                                       torch::nn::BatchNorm2d(planes));
        layer->push_back(std::make_shared<BasicBlockImpl>(inplanes, planes, stride, ds));
        inplanes = planes;
        layer->push_back(std::make_shared<BasicBlockImpl>(inplanes, planes, 1,
                                                          torch::nn::Sequential{nullptr}));
        return layer;
    }

    torch::Tensor forward(torch::Tensor x) override
    {
        x = torch::relu(bn1(conv1(x)));
        if (!small_input)
            x = torch::max_pool2d(x, 3, 2, 1);
        x = layer4->forward(layer3->forward(layer2->forward(layer1->forward(x))));
        x = torch::adaptive_avg_pool2d(x, {1, 1}).flatten(1);
        return fc(x);
    }
};

/* The global RNG is shared by the whole process; model_new() holds this while
 * it seeds and draws so two threads building models cannot interleave. */
std::mutex g_init_mutex;

} /* namespace */

/* ---- the opaque handle -------------------------------------------------- */

struct model {
    model_spec_t spec;
    std::shared_ptr<Net> net;
    /* The schema: tensors alias the module's own storage, so copying into
     * them updates the network. */
    std::vector<std::string> names;
    std::vector<torch::Tensor> tensors;
    size_t numel = 0;
    char err[MODEL_ERR_MAX] = {0};
};

/* ---- small helpers ------------------------------------------------------ */

static void vformat(char *buf, size_t len, const char *fmt, va_list ap)
{
    if (buf == nullptr || len == 0)
        return;
    vsnprintf(buf, len, fmt, ap);
}

static void format(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void format(char *buf, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vformat(buf, len, fmt, ap);
    va_end(ap);
}

/* Records an error on m and returns -1, so validation reads "return fail(...)". */
static int fail(model_t *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(model_t *m, const char *fmt, ...)
{
    if (m == nullptr)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vformat(m->err, sizeof m->err, fmt, ap);
    va_end(ap);
    return -1;
}

/* LibTorch messages carry a C++ backtrace and source location after the
 * first line; only the first line means anything to an operator. */
static std::string first_line(const char *what)
{
    std::string s(what ? what : "");
    size_t nl = s.find('\n');
    return nl == std::string::npos ? s : s.substr(0, nl);
}

/* Runs body and turns any exception into a message in buf. Returns what body
 * returned, or -1 after an exception. */
template <typename F>
static int guarded(char *buf, size_t len, F &&body)
{
    try {
        return body();
    } catch (const c10::Error &e) {
        format(buf, len, "torch: %s", first_line(e.what_without_backtrace()).c_str());
    } catch (const std::bad_alloc &) {
        format(buf, len, "out of memory");
    } catch (const std::exception &e) {
        format(buf, len, "%s", first_line(e.what()).c_str());
    } catch (...) {
        format(buf, len, "unknown C++ exception");
    }
    return -1;
}

template <typename F>
static int guarded(model_t *m, F &&body)
{
    if (m == nullptr)
        return -1;
    m->err[0] = '\0';
    return guarded(m->err, sizeof m->err, std::forward<F>(body));
}

static int64_t image_numel(const model_spec_t &s)
{
    return int64_t(s.in_channels) * s.height * s.width;
}

static int check_spec(const model_spec_t *spec, char *err, size_t errlen)
{
    if (spec == nullptr) {
        format(err, errlen, "spec is NULL");
        return -1;
    }
    if (memchr(spec->arch, '\0', sizeof spec->arch) == nullptr) {
        format(err, errlen, "arch is not NUL-terminated within %d bytes", MODEL_ARCH_MAX);
        return -1;
    }
    if (strcmp(spec->arch, "cnn") != 0 && strcmp(spec->arch, "resnet18") != 0) {
        format(err, errlen, "unknown arch \"%s\" (expected \"cnn\" or \"resnet18\")", spec->arch);
        return -1;
    }
    struct { const char *name; int value, lo, hi; } ranges[] = {
        {"in_channels", spec->in_channels, 1, 16},
        {"height", spec->height, 8, 512},
        {"width", spec->width, 8, 512},
        {"classes", spec->classes, 2, 1000},
    };
    for (const auto &r : ranges) {
        if (r.value < r.lo || r.value > r.hi) {
            format(err, errlen, "%s = %d is out of range [%d, %d]", r.name, r.value, r.lo, r.hi);
            return -1;
        }
    }
    return 0;
}

/* Checks a data set against the model before any of it is touched. Labels
 * are checked one by one so the message can name the culprit. */
static int check_data(model_t *m, const model_data_t *data, bool allow_empty)
{
    if (data == nullptr)
        return fail(m, "data is NULL");
    if (data->n < 0)
        return fail(m, "data->n = %lld is negative", (long long)data->n);
    if (data->n == 0 && !allow_empty)
        return fail(m, "data is empty (n = 0)");
    if (data->n == 0)
        return 0;
    if (data->x == nullptr || data->y == nullptr)
        return fail(m, "data->%s is NULL with n = %lld", data->x ? "y" : "x", (long long)data->n);
    if (data->n > INT64_MAX / image_numel(m->spec))
        return fail(m, "data->n = %lld is too large", (long long)data->n);
    for (int64_t i = 0; i < data->n; i++) {
        int32_t y = data->y[i];
        if (y < 0 || y >= m->spec.classes)
            return fail(m, "label %d at index %lld is out of range [0, %d)", (int)y,
                        (long long)i, m->spec.classes);
    }
    return 0;
}

/* Views over the caller's data. from_blob neither copies nor frees; the
 * const_cast is safe because these tensors are only ever read (index_select
 * and slice-then-forward never write to their input). */
static torch::Tensor images_view(const model_t *m, const model_data_t *data)
{
    return torch::from_blob(const_cast<float *>(data->x),
                            {data->n, m->spec.in_channels, m->spec.height, m->spec.width},
                            torch::kFloat32);
}

/* Labels as int64, which cross_entropy wants: one small copy per call. */
static torch::Tensor labels_tensor(const model_data_t *data)
{
    return torch::from_blob(const_cast<int32_t *>(data->y), {data->n}, torch::kInt32)
        .to(torch::kInt64);
}

static int check_opts(model_t *m, const model_train_opts_t *o)
{
    if (o == nullptr)
        return fail(m, "opts is NULL");
    if (o->epochs < 1)
        return fail(m, "opts->epochs = %d must be >= 1", o->epochs);
    if (o->batch < 1)
        return fail(m, "opts->batch = %d must be >= 1", o->batch);
    if (!(o->lr > 0) || !std::isfinite(o->lr))
        return fail(m, "opts->lr = %g must be finite and > 0", (double)o->lr);
    if (!(o->momentum >= 0 && o->momentum < 1))
        return fail(m, "opts->momentum = %g must be in [0, 1)", (double)o->momentum);
    if (!(o->weight_decay >= 0) || !std::isfinite(o->weight_decay))
        return fail(m, "opts->weight_decay = %g must be finite and >= 0", (double)o->weight_decay);
    if (o->progress_every < 0)
        return fail(m, "opts->progress_every = %lld must be >= 0", (long long)o->progress_every);
    if (!(o->prox_mu >= 0) || !std::isfinite(o->prox_mu))
        return fail(m, "opts->prox_mu = %g must be finite and >= 0", (double)o->prox_mu);
    if (o->augment != 0 && o->augment != 1)
        return fail(m, "opts->augment = %d must be 0 or 1", o->augment);
    if (o->class_balanced != 0 && o->class_balanced != 1)
        return fail(m, "opts->class_balanced = %d must be 0 or 1", o->class_balanced);
    return 0;
}

/* A small random affine per image (model.h, augment): rotation within +-10
 * degrees, scale 0.9..1.1, translation within +-1/16 of the side, drawn
 * from gen; bilinear, the border's values outside the image. affine_grid's
 * theta maps output coordinates to input ones (normalised to [-1, 1]), so
 * an image scaled by s samples its input at 1/s. */
static torch::Tensor augment_batch(const torch::Tensor &xb, at::Generator &gen)
{
    const int64_t b = xb.size(0);
    torch::Tensor u = at::rand({b, 4}, gen, torch::kFloat32);
    torch::Tensor ang = (u.select(1, 0) * 2 - 1) * float(10.0 * M_PI / 180.0);
    torch::Tensor inv = 1.0f / (0.9f + 0.2f * u.select(1, 1));
    torch::Tensor tx = (u.select(1, 2) * 2 - 1) * 0.125f, ty = (u.select(1, 3) * 2 - 1) * 0.125f;
    torch::Tensor c = torch::cos(ang) * inv, s = torch::sin(ang) * inv;
    torch::Tensor theta = torch::stack({torch::stack({c, -s, tx}, 1), torch::stack({s, c, ty}, 1)}, 1);
    torch::Tensor grid = torch::nn::functional::affine_grid(theta, xb.sizes(), false);
    return torch::nn::functional::grid_sample(
        xb, grid, torch::nn::functional::GridSampleFuncOptions()
                      .mode(torch::kBilinear)
                      .padding_mode(torch::kBorder)
                      .align_corners(false));
}

/* ---- the C API ---------------------------------------------------------- */

extern "C" {

void model_set_threads(int threads)
{
    /* Interop threads can be set only once per process, and only before any
     * interop work has started: remember that we tried and never retry. */
    static std::atomic<bool> interop_done{false};
    if (threads < 1)
        threads = 1;
    try {
        at::set_num_threads(threads);
    } catch (...) {
        /* nothing sensible to report through a void function */
    }
    if (!interop_done.exchange(true)) {
        try {
            at::set_num_interop_threads(threads);
        } catch (...) {
            /* already started by someone else: keep LibTorch's choice */
        }
    }
}

model_t *model_new(const model_spec_t *spec, uint64_t seed, char *err, size_t errlen)
{
    if (err != nullptr && errlen > 0)
        err[0] = '\0';
    if (check_spec(spec, err, errlen) != 0)
        return nullptr;
    model_t *m = nullptr;
    int rc = guarded(err, errlen, [&]() -> int {
        std::unique_ptr<model_t> mm(new model_t());
        mm->spec = *spec;
        const int64_t c = spec->in_channels, h = spec->height, w = spec->width,
                      k = spec->classes;
        {
            std::lock_guard<std::mutex> lock(g_init_mutex);
            torch::manual_seed(seed);
            if (strcmp(spec->arch, "cnn") == 0)
                mm->net = std::make_shared<Cnn>(c, h, w, k);
            else
                mm->net = std::make_shared<ResNet18>(c, h, w, k);
        }
        for (const auto &p : mm->net->named_parameters(/*recurse=*/true)) {
            mm->names.push_back(p.key());
            mm->tensors.push_back(p.value());
        }
        /* num_batches_tracked is int64 and meaningless to average: left out. */
        for (const auto &b : mm->net->named_buffers(/*recurse=*/true)) {
            if (!b.value().is_floating_point())
                continue;
            mm->names.push_back(b.key());
            mm->tensors.push_back(b.value());
        }
        for (const auto &t : mm->tensors) {
            /* get/set copy raw float32 memory: make sure that is what we have */
            TORCH_CHECK(t.scalar_type() == torch::kFloat32 && t.is_contiguous(),
                        "internal: schema tensor is not contiguous float32");
            TORCH_CHECK(t.dim() <= MODEL_MAX_DIMS, "internal: tensor has too many dimensions");
            mm->numel += size_t(t.numel());
        }
        m = mm.release();
        return 0;
    });
    return rc == 0 ? m : nullptr;
}

void model_destroy(model_t **m)
{
    if (m == nullptr || *m == nullptr)
        return;
    try {
        delete *m;
    } catch (...) {
        /* destructors of tensors do not throw; belt and braces */
    }
    *m = nullptr;
}

const char *model_errmsg(const model_t *m)
{
    return m != nullptr ? m->err : "model is NULL";
}

const model_spec_t *model_get_spec(const model_t *m)
{
    return m != nullptr ? &m->spec : nullptr;
}

size_t model_num_tensors(const model_t *m)
{
    return m != nullptr ? m->tensors.size() : 0;
}

size_t model_numel(const model_t *m)
{
    return m != nullptr ? m->numel : 0;
}

const char *model_tensor_name(const model_t *m, size_t i)
{
    if (m == nullptr || i >= m->names.size())
        return nullptr;
    return m->names[i].c_str();
}

int model_tensor_shape(const model_t *m, size_t i, int64_t shape[MODEL_MAX_DIMS])
{
    if (m == nullptr || shape == nullptr || i >= m->tensors.size())
        return -1;
    const auto sizes = m->tensors[i].sizes();
    for (size_t d = 0; d < sizes.size() && d < MODEL_MAX_DIMS; d++)
        shape[d] = sizes[d];
    return int(sizes.size());
}

int model_get_params(model_t *m, float *out, size_t n)
{
    return guarded(m, [&]() -> int {
        if (out == nullptr)
            return fail(m, "out is NULL");
        if (n != m->numel)
            return fail(m, "n = %zu but the model has %zu parameters", n, m->numel);
        float *p = out;
        for (const auto &t : m->tensors) {
            memcpy(p, t.data_ptr<float>(), size_t(t.numel()) * sizeof(float));
            p += t.numel();
        }
        return 0;
    });
}

int model_set_params(model_t *m, const float *in, size_t n)
{
    return guarded(m, [&]() -> int {
        if (in == nullptr)
            return fail(m, "in is NULL");
        if (n != m->numel)
            return fail(m, "n = %zu but the model has %zu parameters", n, m->numel);
        /* Check everything first so a bad vector leaves the model untouched. */
        size_t base = 0;
        for (size_t t = 0; t < m->tensors.size(); t++) {
            const size_t len = size_t(m->tensors[t].numel());
            for (size_t j = 0; j < len; j++) {
                if (!std::isfinite(in[base + j]))
                    return fail(m, "value %g at index %zu (%s[%zu]) is not finite",
                                (double)in[base + j], base + j, m->names[t].c_str(), j);
            }
            base += len;
        }
        torch::NoGradGuard no_grad;
        const float *p = in;
        for (auto &t : m->tensors) {
            t.copy_(torch::from_blob(const_cast<float *>(p), t.sizes(), torch::kFloat32));
            p += t.numel();
        }
        return 0;
    });
}

int model_train(model_t *m, const model_data_t *data, const model_train_opts_t *opts,
                model_result_t *res)
{
    return guarded(m, [&]() -> int {
        if (check_opts(m, opts) != 0 || check_data(m, data, /*allow_empty=*/false) != 0)
            return -1;
        /* This thread may not be the one that called model_set_threads(), and
         * OpenMP's thread count is per thread: apply the process setting. */
        at::init_num_threads();

        const int64_t n = data->n, batch = opts->batch;
        torch::Tensor x = images_view(m, data);
        torch::Tensor y = labels_tensor(data);

        Net &net = *m->net;
        net.train();
        torch::optim::SGD sgd(net.parameters(), torch::optim::SGDOptions(opts->lr)
                                                     .momentum(opts->momentum)
                                                     .weight_decay(opts->weight_decay));
        /* A private generator: the order depends on opts->seed alone and
         * training leaves the global RNG alone. */
        at::Generator gen = at::detail::createCPUGenerator(opts->seed);
        /* FedProx: the parameters we started from (the global model). */
        std::vector<torch::Tensor> params = net.parameters(), anchor;
        if (opts->prox_mu > 0)
            for (const auto &p : params)
                anchor.push_back(p.detach().clone());
        torch::nn::functional::CrossEntropyFuncOptions ce;
        if (opts->class_balanced) {
            torch::Tensor counts = torch::bincount(y, {}, m->spec.classes).to(torch::kFloat32);
            ce.weight(torch::where(counts > 0, float(n) / (float(m->spec.classes) * counts),
                                   torch::zeros_like(counts)));
        }

        double loss_sum = 0;
        int64_t correct = 0;
        for (int epoch = 1; epoch <= opts->epochs; epoch++) {
            loss_sum = 0;
            correct = 0;
            torch::Tensor perm = torch::randperm(n, gen, torch::kInt64);
            int64_t next_report = opts->progress_every > 0 ? opts->progress_every : n;
            for (int64_t start = 0; start < n; start += batch) {
                const int64_t end = std::min(n, start + batch);
                torch::Tensor idx = perm.slice(0, start, end);
                torch::Tensor xb = x.index_select(0, idx);
                torch::Tensor yb = y.index_select(0, idx);
                if (opts->augment)
                    xb = augment_batch(xb, gen);

                sgd.zero_grad();
                torch::Tensor logits = net.forward(xb);
                torch::Tensor loss = torch::nn::functional::cross_entropy(logits, yb, ce);
                const double l = loss.item<double>();
                if (!std::isfinite(l))
                    return fail(m, "training diverged: loss is %g at epoch %d, image %lld",
                                l, epoch, (long long)start);
                loss.backward();
                /* The proximal term's gradient, mu (w - w_start), added to the
                 * loss's: the same step as differentiating (mu/2)||w - w_start||^2. */
                if (opts->prox_mu > 0) {
                    torch::NoGradGuard no_grad;
                    for (size_t i = 0; i < params.size(); i++)
                        if (params[i].grad().defined())
                            params[i].grad().add_(params[i] - anchor[i], opts->prox_mu);
                }
                sgd.step();

                loss_sum += l * double(end - start);
                correct += logits.argmax(1).eq(yb).sum().item<int64_t>();

                /* One call per batch at most, however many thresholds it crossed;
                 * the end of the epoch always reports. */
                if (end >= next_report || end == n) {
                    while (next_report <= end)
                        next_report += opts->progress_every > 0 ? opts->progress_every : n;
                    if (opts->progress != nullptr &&
                        opts->progress(opts->progress_user, epoch, end) != 0)
                        return fail(m, "training stopped by caller");
                }
            }
        }
        if (res != nullptr) {
            res->n = n;
            res->loss_sum = loss_sum;
            res->correct = correct;
            res->train_loss = loss_sum / double(n);
        }
        return 0;
    });
}

int model_evaluate(model_t *m, const model_data_t *data, int batch, model_result_t *res,
                   float *scores)
{
    return guarded(m, [&]() -> int {
        if (check_data(m, data, /*allow_empty=*/true) != 0)
            return -1;
        at::init_num_threads();
        if (batch <= 0)
            batch = 256;

        const int64_t n = data->n;
        double loss_sum = 0;
        int64_t correct = 0;
        if (n > 0) {
            torch::NoGradGuard no_grad;
            Net &net = *m->net;
            net.eval();
            torch::Tensor x = images_view(m, data);
            torch::Tensor y = labels_tensor(data);
            for (int64_t start = 0; start < n; start += batch) {
                const int64_t end = std::min(n, start + int64_t(batch));
                torch::Tensor logits = net.forward(x.slice(0, start, end));
                torch::Tensor yb = y.slice(0, start, end);
                loss_sum += torch::nn::functional::cross_entropy(
                                logits, yb,
                                torch::nn::functional::CrossEntropyFuncOptions().reduction(
                                    torch::kSum))
                                .item<double>();
                correct += logits.argmax(1).eq(yb).sum().item<int64_t>();
                if (scores != nullptr) {
                    torch::Tensor prob = torch::softmax(logits, 1);
                    torch::Tensor s = m->spec.classes == 2 ? prob.select(1, 1)
                                                           : std::get<0>(prob.max(1));
                    s = s.contiguous();
                    memcpy(scores + start, s.data_ptr<float>(),
                           size_t(end - start) * sizeof(float));
                }
            }
        }
        if (res != nullptr) {
            res->n = n;
            res->loss_sum = loss_sum;
            res->correct = correct;
            res->train_loss = 0;
        }
        return 0;
    });
}

} /* extern "C" */
