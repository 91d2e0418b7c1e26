#include "core/image_loader.h"

#include <cstring>
#include <exception>
#include <utility>

namespace repopt {

struct ImageLoader::Job {
  std::vector<std::string> files;
  std::vector<int64_t> indices;
  ImageTransformSpec spec;
  Done done;
  std::unique_ptr<ImageBatch> batch;
  size_t sampleBytes = 0;
  // The next image to hand out (under the loader's mutex) and the images not yet finished.
  size_t next = 0;
  std::atomic<size_t> remaining{0};
};

ImageLoader::ImageLoader(int threads) {
  workers_.reserve(size_t(threads));
  try {
    for (int t = 0; t < threads; ++t) workers_.emplace_back([this] { work(); });
  } catch (...) {
    dispose();
    throw;
  }
}

ImageLoader::~ImageLoader() { dispose(); }

void ImageLoader::submit(std::vector<std::string> files, std::vector<int64_t> indices, ImageTransformSpec spec, Done done) {
  auto job = std::make_shared<Job>();
  const size_t n = files.size();
  job->sampleBytes = size_t(spec.size) * size_t(spec.size) * 3;
  job->batch = std::make_unique<ImageBatch>();
  job->batch->images.assign(n * job->sampleBytes, 0);
  job->batch->status.assign(n, uint8_t(ImageStatus::Ok));
  job->batch->messages.assign(n, std::string());
  job->files = std::move(files);
  job->indices = std::move(indices);
  job->spec = std::move(spec);
  job->done = std::move(done);
  job->remaining = n;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!stopping_ && n > 0) {
      queue_.push_back(job);
      wake_.notify_all();
      return;
    }
  }
  job->batch->cancelled = n > 0;
  job->done(std::move(job->batch));
}

void ImageLoader::work() {
  for (;;) {
    std::shared_ptr<Job> job;
    size_t k;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;
      job = queue_.front();
      k = job->next++;
      if (job->next == job->files.size()) queue_.pop_front();
    }
    ImageBatch& b = *job->batch;
    try {
      loadSample(job->files[k], job->indices[k], job->spec, b.images.data() + k * job->sampleBytes);
    } catch (const ImageError& e) {
      b.status[k] = uint8_t(e.status);
      b.messages[k] = e.what();
    } catch (const std::bad_alloc&) {
      b.status[k] = uint8_t(ImageStatus::Failed);
      b.messages[k] = "out of memory";
    } catch (const std::exception& e) {
      b.status[k] = uint8_t(ImageStatus::Failed);
      b.messages[k] = e.what();
    }
    if (b.status[k] != uint8_t(ImageStatus::Ok)) std::memset(b.images.data() + k * job->sampleBytes, 0, job->sampleBytes);
    finish(job, 1);
  }
}

void ImageLoader::finish(const std::shared_ptr<Job>& job, size_t count) {
  // The last image of a batch hands the batch over (acq_rel: every thread's writes are visible to it).
  if (job->remaining.fetch_sub(count, std::memory_order_acq_rel) == count) job->done(std::move(job->batch));
}

void ImageLoader::dispose() {
  std::deque<std::shared_ptr<Job>> cancelled;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_ && workers_.empty()) return;
    stopping_ = true;
    cancelled.swap(queue_);
    wake_.notify_all();
  }
  for (auto& job : cancelled) {
    const size_t left = job->files.size() - job->next;
    job->next = job->files.size();
    job->batch->cancelled = true;
    finish(job, left);
  }
  for (auto& t : workers_) {
    if (t.joinable()) t.join();
  }
  workers_.clear();
}

}  // namespace repopt
