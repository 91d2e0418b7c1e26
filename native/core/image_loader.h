#pragma once
// The streaming loader's decoding threads: a fixed pool of std::threads (apart from libuv's pool and
// libtorch's, which the training step keeps busy) that decodes and transforms the images of queued
// batches, each thread taking the next image of the oldest batch.
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/image_transform.h"

namespace repopt {

// One batch's outcome: images [n, 3, size, size] (a failed image's slot is 0), per image its
// ImageStatus and message ("" when loaded).
struct ImageBatch {
  std::vector<uint8_t> images;
  std::vector<uint8_t> status;
  std::vector<std::string> messages;
  // The loader was disposed before every image was loaded.
  bool cancelled = false;
};

class ImageLoader {
 public:
  using Done = std::function<void(std::unique_ptr<ImageBatch>)>;

  explicit ImageLoader(int threads);
  ~ImageLoader();
  ImageLoader(const ImageLoader&) = delete;
  ImageLoader& operator=(const ImageLoader&) = delete;

  int threads() const { return int(workers_.size()); }

  // Queues a batch (files[k] is data set sample indices[k]); done runs once, on a loader thread (or
  // here, for an empty batch or a disposed loader), when every image has been processed.
  void submit(std::vector<std::string> files, std::vector<int64_t> indices, ImageTransformSpec spec, Done done);

  // Cancels the queued images (their batches end with cancelled set), waits for those in progress and
  // joins the threads. Idempotent.
  void dispose();

 private:
  struct Job;
  void work();
  void finish(const std::shared_ptr<Job>& job, size_t count);

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::shared_ptr<Job>> queue_;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace repopt
